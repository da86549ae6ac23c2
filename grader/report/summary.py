"""A Markdown summary of one grading for a CI job page (GitHub's step summary).

Four parts: the verdict and total, the score table, the size limits and the accuracy.
Student-written strings reach the page, so table cells are made safe for Markdown. Items are
counted as junit.xml counts them (``ItemResult.outcome``): a partial score is a failure.
"""

from __future__ import annotations

from grader.report.render import percent, score, thousands
from grader.results import GradeResult, TaskResult

_STATUS = {
    "pass": "✅ pass",
    "partial": "🟡 partial",
    "fail": "❌ fail",
    "error": "💥 error",
    "manual": "👤 TA review",
    "not_checked": "⏭️ not checked",
}


def cell(text: str) -> str:
    """One table cell: no line breaks, pipes and HTML escaped."""
    flat = " ".join(text.split())
    return flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def markdown_summary(result: GradeResult, profile: str, problems: list[str]) -> str:
    parts = [_headline(result, profile, problems), _scores(result), _limits(result), _accuracy(result)]
    return "\n\n".join(p for p in parts if p) + "\n"


def _headline(result: GradeResult, profile: str, problems: list[str]) -> str:
    lines = [
        f"## {cell(result.rubric_title)}: {cell(result.student_id)}",
        "",
        f"**{score(result.total)} / {score(result.max_total)} points** (profile `{profile}`)",
    ]
    if result.not_checked:
        lines.append(f"- {score(result.not_checked)} points not checked in CI; the full grading scores them")
    if result.pending_manual:
        lines.append(f"- {score(result.pending_manual)} points pending TA review")
    lines += [f"- 🚩 **{cell(a)}**" for a in result.alerts]
    lines += [f"- ⚠️ {cell(w)}" for w in result.warnings]
    stopped = [t.stopped for t in result.tasks.values() if t.stopped and t.stopped not in problems]
    lines += [f"- 💥 {cell(s)}" for s in stopped]
    verdict = "❌ **CI check failed**" if problems else "✅ **CI check passed**"
    lines += ["", verdict, *[f"- {cell(p)}" for p in problems]]
    return "\n".join(lines)


def _scores(result: GradeResult) -> str:
    rows = [
        "### Scores",
        "",
        "| Item | Task | Title | Score | Status | Message |",
        "|---|---|---|--:|---|---|",
    ]
    for i in result.items:
        rows.append(
            f"| {cell(i.id)} | {cell(i.task or '—')} | {cell(i.title)} | "
            f"{score(i.score)} / {score(i.max_score)} | {_STATUS[i.status]} | {cell(i.outcome_message)} |"
        )
    rows.append(f"| **Total** | | | **{score(result.total)} / {score(result.max_total)}** | | |")
    return "\n".join([*rows, "", _counts(result)])


def _counts(result: GradeResult) -> str:
    outcomes = [i.outcome for i in result.items]
    partial = sum(i.status == "partial" for i in result.items)
    failed = f"{outcomes.count('failed')} failed"
    if partial:
        failed += f" ({partial} with partial credit, which counts as failed)"
    return f"Items: {outcomes.count('passed')} passed, {failed}, {outcomes.count('skipped')} skipped."


def _limits(result: GradeResult) -> str:
    rows = ["### Limits", "", "| Task | Measure | Value | Limit | Within |", "|---|---|--:|--:|---|"]
    for task in result.tasks.values():
        rows += _limit_rows(task)
    return "\n".join(rows) if len(rows) > 4 else ""


def _limit_rows(task: TaskResult) -> list[str]:
    measured = [("parameters", "params", task.params)]
    measured += [(f"MACs ({name})", f"macs:{name}", macs) for name, macs in task.macs.items()]
    rows = []
    for label, key, value in measured:
        if value is None:
            continue
        limit = task.limits.get(key)
        within = "—" if limit is None else ("✅ yes" if value <= limit else "❌ no")
        rows.append(f"| {cell(task.id)} | {label} | {thousands(value)} | {thousands(limit)} | {within} |")
    return rows


def _accuracy(result: GradeResult) -> str:
    """The accuracy table; a Top-3 column only where the rubric shows top-3."""
    top3 = any(
        task.evaluation is not None and task.evaluation.top3 is not None for task in result.tasks.values()
    )
    head = ["Task", "Top-1", *(["Top-3"] if top3 else []), "Test images", "Claimed"]
    align = ["---", "--:", *(["--:"] if top3 else []), "---", "--:"]
    rows = ["### Accuracy", "", f"| {' | '.join(head)} |", f"|{'|'.join(align)}|"]
    for task in result.tasks.values():
        evaluation = task.evaluation
        if evaluation is None:
            accuracies, images = ["—", *(["—"] if top3 else [])], "not evaluated"
        else:
            accuracies = [percent(evaluation.top1), *([percent(evaluation.top3)] if top3 else [])]
            images = f"{evaluation.n_images:,}"
            if evaluation.subset_per_class is not None:
                images += f" (first {evaluation.subset_per_class} per class)"
        cells = [cell(task.id), *accuracies, images, percent(task.claimed_test_accuracy)]
        rows.append(f"| {' | '.join(cells)} |")
    return "\n".join(rows)
