"""Hostile and broken submissions graded through the real pipeline, once per sandbox backend.

Each attack is one task of one student (tests/attacks/corpus/<task>/model.py, rubric
attacks.yaml), so it runs in a sandbox of its own. For every attack the expected end
is asserted: the stage and plain words it fails with, or, where the attack is only
meant to fake a result, that the result is exactly what honest logits give. Around
it all: the honest task and the other student are graded normally, nothing on the host
changed, no canary appears in any output and no process of any job is left.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from grader.cli import _print_scores
from grader.protocol import MAX_BLOCKS, MAX_MESSAGE, MAX_ROWS
from tests.attacks.grading import (
    ATTACKER,
    CANARY_ENV,
    CANARY_FILE_TEXT,
    MEMORY_BYTES,
    OTHER,
    TIMEOUT_S,
    Corpus,
    grade_corpus,
)
from tests.attacks.weights import PAYLOAD_MARKER
from tests.conftest import TEST_PER_CLASS, require_docker_or_skip

BACKENDS = ["bwrap", pytest.param("docker", marks=pytest.mark.docker)]


def _unavailable(backend: str) -> str | None:
    """Why ``backend`` cannot run here, or None."""
    if backend == "bwrap" and shutil.which("bwrap") is None:
        return "bubblewrap is not installed (apt-get install bubblewrap)"
    return None


@pytest.fixture(scope="module", params=BACKENDS)
def corpus(request: pytest.FixtureRequest, small_cifar: Path, tmp_path_factory) -> Corpus:
    if request.param == "docker":
        require_docker_or_skip()
    reason = _unavailable(request.param)
    if reason:
        pytest.skip(reason)
    return grade_corpus(request.param, small_cifar, tmp_path_factory)


pytestmark = pytest.mark.slow

PICKLED = "holds a whole pickled model or other Python objects; save model.state_dict() instead"
UNREADABLE = "could not be read as PyTorch weights (RuntimeError: "
OUTSIDE = "is a link pointing outside the submission; submit the file itself"
NOT_FOUND = "failed to import: FileNotFoundError: [Errno 2] No such file or directory:"

# task -> (stage, words in the error); every one of these tasks ends in status "error".
FAILS = {
    "pickle_reduce": ("weights", "pickle_reduce/weights.pt " + PICKLED),
    "pickle_exec_global": ("weights", "pickle_exec_global/weights.pt " + PICKLED),
    "legacy_pickle": ("weights", "legacy_pickle/weights.pt " + PICKLED),
    "weights_oob_view": ("weights", "weights_oob_view/weights.pt " + UNREADABLE),
    "torchscript_weights": ("weights", "Cannot use ``weights_only=True`` with TorchScript archives"),
    "safetensors_header": ("weights", "weights.safetensors is not a readable .safetensors file"),
    "symlink_weights": ("manifest", "tasks.symlink_weights.weights 'symlink_weights/weights.pt' " + OUTSIDE),
    "symlink_model": ("manifest", "tasks.symlink_model.model 'symlink_model/model.py' " + OUTSIDE),
    "manifest_traversal": (
        "manifest",
        "tasks.manifest_traversal.model '../../../escape.py' leaves the submission folder",
    ),
    "fake_logits_pickle": ("sandbox", "the logits file was not a plain .npy array"),
    "address_space_bomb": ("build", "Net() raised RuntimeError: "),
    "endless_init": ("timeout", f"stopped after {TIMEOUT_S:.0f} s while building the model"),
    "endless_forward": ("timeout", f"stopped after {TIMEOUT_S:.0f} s in the first forward pass"),
    "sys_exit_zero": ("import", "model.py called sys.exit(0) while being imported"),
    "os_exit_zero": ("sandbox", "ended after stage 'start' without finishing (exit code 0)"),
    "wrong_shape": ("forward", "returned shape [1, 7], expected [1, 10] (one logit per class)"),
    "too_large": ("build", "6,166,000,010 parameters (23.0 GiB in float32)"),
    "huge_exception": ("import", "huge_exception/model.py failed to import: RuntimeError: xxxxxxxx"),
    "terminal_escapes": (
        "import",
        "RuntimeError: \x1b]52;c;cHduZWQ=\x07\x1b]0;owned\x07[green]all checks pass[/]",
    ),
}
# Module-level code the sandbox stopped (task -> words of the failure): the task is graded
# from the file's definitions only, as the honest network, and the note says what failed.
BLOCKED_AT_IMPORT = {
    "net_connect": "failed to import: ConnectionRefusedError: [Errno 111] Connection refused",
    "net_dns": "failed to import: gaierror: [Errno -3] Temporary failure in name resolution",
    "net_http": "failed to import: URLError: <urlopen error [Errno 101] Network is unreachable>",
    "read_canary": NOT_FOUND,
    "read_other_submission": NOT_FOUND,
    "read_grader_output": NOT_FOUND,
    "symlink_dir": NOT_FOUND,
    "proc_environ": "failed to import: RuntimeError: environment seen: ",
    "proc_sys_write": "failed to import: OSError: [Errno 30] Read-only file system",
    "fork_bomb": "failed to import: BlockingIOError: [Errno 11] Resource temporarily unavailable",
    "endless_import": f"was still running its module-level code after {TIMEOUT_S / 4:.0f} s",
    "disk_fill_tmp": "failed to import: OSError: [Errno 28] No space left on device",
}
# Attacks meant to fake or disturb a result, or to outlive the job: graded as the honest network.
HONEST_RESULT = [
    "patch_argmax",
    "forged_report",
    "late_forgery",
    "disk_fill_out",
    "stdout_flood",
    "ignores_sigterm",
    "kill_everything",
    "symlink_in_out",
    "bytecode",
    "huge_summary",
    "holds_lock",
    "pickled_module_payload",
]


@pytest.mark.parametrize(("task_id", "stage", "words"), [(k, *v) for k, v in FAILS.items()])
def test_each_attack_fails_in_plain_words(corpus: Corpus, task_id: str, stage: str, words: str) -> None:
    task = corpus.task(task_id)
    assert task.status == "error", f"{task_id}: {task.error}"
    assert (task.error_stage, words in (task.error or "")) == (stage, True), task.error


def test_memory_bomb_says_it_ran_out_of_memory(corpus: Corpus) -> None:
    task = corpus.task("memory_bomb")
    assert task.status == "error" and task.error_stage == "resources"
    assert task.error.startswith(f"ran out of memory (limit {MEMORY_BYTES / 2**30:.1f} GiB)")


def test_memory_bomb_is_stopped_by_the_memory_limit(corpus: Corpus) -> None:
    task = corpus.task("memory_bomb")
    outcome = corpus.jobs[(ATTACKER, "memory_bomb")].outcome
    assert task.status == "error" and task.evaluation is None
    assert outcome.oom_killed and outcome.returncode == -9 and not outcome.timed_out
    assert outcome.memory_limit_bytes == MEMORY_BYTES
    assert outcome.seconds < TIMEOUT_S


def test_honest_task_is_graded_like_the_other_students(corpus: Corpus) -> None:
    mine, theirs = corpus.task("honest"), corpus.other.result.tasks["honest"]
    assert mine.status == theirs.status == "ok"
    assert mine.evaluation.n_images == 10 * TEST_PER_CLASS
    assert mine.evaluation.top1 == theirs.evaluation.top1
    assert mine.evaluation.confusion == theirs.evaluation.confusion
    assert mine.params == theirs.params == (8 * 3 * 9 + 8) + 16 + (512 * 10 + 10)


@pytest.mark.parametrize("task_id", HONEST_RESULT)
def test_faking_or_disturbing_gets_exactly_the_honest_result(corpus: Corpus, task_id: str) -> None:
    honest, task = corpus.task("honest"), corpus.task(task_id)
    assert task.status == "ok", task.error
    assert task.params == honest.params and task.macs == honest.macs
    assert task.evaluation.top1 == honest.evaluation.top1
    assert task.evaluation.confusion == honest.evaluation.confusion


@pytest.mark.parametrize(("task_id", "words"), BLOCKED_AT_IMPORT.items())
def test_module_level_code_is_stopped_and_the_definitions_graded(
    corpus: Corpus, task_id: str, words: str
) -> None:
    honest, task = corpus.task("honest"), corpus.task(task_id)
    assert task.status == "ok", task.error
    assert task.evaluation.top1 == honest.evaluation.top1 and task.params == honest.params
    assert any(words in note and "definitions only" in note for note in task.notes), task.notes


def test_labels_read_at_import_are_not_there(corpus: Corpus) -> None:
    task = corpus.task("read_labels")
    assert task.error_stage == "forward" and "NameError: name 'LABELS' is not defined" in task.error
    assert any(NOT_FOUND in note for note in task.notes), task.notes


def test_an_unused_missing_package_is_named_and_graded_without(corpus: Corpus) -> None:
    task = corpus.task("missing_package")
    assert task.status == "ok" and task.missing_packages == ["tensorflow_addons"]
    assert any("tensorflow_addons" in w for w in corpus.attacker.result.warnings)


def test_forged_reports_do_not_raise_a_score(corpus: Corpus) -> None:
    items = {item.id: item for item in corpus.attacker.result.items}
    assert items["forged-params"].status == "fail" and items["late-params"].status == "fail"
    honest_accuracy = corpus.task("honest").evaluation.top1
    assert items["forged-acc"].score == pytest.approx(honest_accuracy / 100, abs=0.01)


@pytest.mark.xfail(
    strict=True,
    reason="parameters and MACs are counted in the student's own process (SECURITY.md)",
)
def test_tampering_with_the_counters_in_process_is_caught(corpus: Corpus) -> None:
    assert corpus.task("patch_harness").params == corpus.task("honest").params


def test_nan_logits_count_as_wrong(corpus: Corpus) -> None:
    task = corpus.task("nan_output")
    assert task.status == "ok"
    assert task.evaluation.top1 == 0.0 and task.evaluation.nonfinite_rows == 10 * TEST_PER_CLASS


def test_too_large_model_is_counted_without_being_built(corpus: Corpus) -> None:
    task = corpus.task("too_large")
    assert task.params == 3072 * 2_000_000 + 2_000_000 + 2_000_000 * 10 + 10
    assert corpus.jobs[(ATTACKER, "too_large")].outcome.seconds < TIMEOUT_S


def test_a_whole_pickled_model_gives_its_weights_and_a_note(corpus: Corpus) -> None:
    task = corpus.task("pickled_module_payload")
    assert any("holds a whole pickled model (TinyCNN)" in note for note in task.notes), task.notes


def test_no_weights_payload_ran(corpus: Corpus) -> None:
    for (_, task_id), job in corpus.jobs.items():
        assert PAYLOAD_MARKER.encode() not in job.logs, task_id
        assert "pwned" not in job.outputs, task_id


def test_network_reaches_nothing(corpus: Corpus) -> None:
    assert corpus.accepted == []


def test_environment_of_the_grader_is_not_visible(corpus: Corpus) -> None:
    (note,) = corpus.task("proc_environ").notes
    seen = note.split("environment seen: ", 1)[1]
    assert CANARY_ENV[0] not in seen and "PYTHONPATH" in seen


def test_output_folders_hold_only_what_the_harness_wrote(corpus: Corpus) -> None:
    """Links and files a job planted are not handed to the host; a full folder was cleared."""
    assert set(corpus.jobs[(ATTACKER, "symlink_in_out")].outputs) == {"report.json", "logits.npy"}
    assert set(corpus.jobs[(ATTACKER, "disk_fill_out")].outputs) == {"report.json", "logits.npy"}


def test_output_folders_stay_within_their_cap(corpus: Corpus) -> None:
    over = {task: job.output_bytes for (_, task), job in corpus.jobs.items() if job.output_bytes > 64 * 2**20}
    assert over == {}  # Settings.max_output_bytes


def test_a_log_flood_is_kept_to_its_cap(corpus: Corpus) -> None:
    job = corpus.jobs[(ATTACKER, "stdout_flood")]
    assert job.outcome.log_bytes_dropped >= 128 * 2**20 - 2**20
    assert len(job.logs) < 2**20 + 2**10


def test_nothing_on_the_host_changed(corpus: Corpus) -> None:
    changed = {
        k for k in corpus.before.keys() | corpus.after.keys() if corpus.before.get(k) != corpus.after.get(k)
    }
    assert changed == set()
    assert corpus.bystander_alive


def test_no_canary_in_any_output(corpus: Corpus) -> None:
    secrets = [CANARY_ENV[1], CANARY_FILE_TEXT]
    texts = {"results.json": corpus.results_json}
    for (student, task_id), job in corpus.jobs.items():
        texts[f"{student}/{task_id} logs"] = job.logs.decode(errors="replace")
        for name, content in job.outputs.items():
            texts[f"{student}/{task_id}/{name}"] = content.decode(errors="replace")
    leaks = [(where, secret) for where, text in texts.items() for secret in secrets if secret in text]
    assert leaks == []


def test_no_process_of_any_job_survives(corpus: Corpus) -> None:
    assert corpus.leftover_processes == []


def test_every_task_ran_in_a_sandbox_of_its_own(corpus: Corpus) -> None:
    sandboxed = {task_id for student, task_id in corpus.jobs if student == ATTACKER}
    manifest_refused = {"symlink_weights", "symlink_model", "manifest_traversal"}
    assert sandboxed == set(corpus.attacker.result.tasks) - manifest_refused
    assert (OTHER, "honest") in corpus.jobs
    assert corpus.attacker.result.sandbox["backend"] == corpus.backend


def test_limits_in_force_are_recorded(corpus: Corpus) -> None:
    limits = corpus.attacker.result.sandbox["limits"]
    if corpus.backend == "bwrap":
        assert limits["memory"].startswith("1.0 GiB, no swap")
        assert limits["processes"].startswith("256 ")
        assert limits["output directory"] == "64 MiB (tmpfs)"


def test_only_source_runs_never_planted_bytecode(corpus: Corpus) -> None:
    for (_, task_id), job in corpus.jobs.items():
        assert b"bytecode ran" not in job.logs, task_id
    assert all("bytecode ran" not in (t.error or "") for t in corpus.attacker.result.tasks.values())


def test_what_a_student_makes_huge_stays_bounded_on_the_host(corpus: Corpus) -> None:
    task = corpus.task("huge_summary")
    assert task.summary is not None and len(task.summary.rows) == MAX_ROWS
    assert task.summary.rows_omitted >= 6000 + 4 - MAX_ROWS
    assert len(task.diagram) == MAX_BLOCKS and task.diagram_omitted >= 6000 - MAX_BLOCKS
    error = corpus.task("huge_exception").error or ""
    assert len(error) <= MAX_MESSAGE and error.endswith("(cut short)")
    # The pytest process graded every attack itself (the host side of every job): its peak
    # resident memory stays far below what a 6,000-block diagram or a 10 MB message would cost.
    assert corpus.host_peak_bytes < 1.5 * 2**30


def test_a_model_that_cannot_be_copied_is_counted_as_it_is(corpus: Corpus) -> None:
    task, honest = corpus.task("holds_lock"), corpus.task("honest")
    assert task.macs == honest.macs and task.macs_failed == {}


def test_a_memorised_test_set_is_flagged_to_the_ta(corpus: Corpus) -> None:
    task = corpus.task("memorised")
    assert task.status == "ok" and task.evaluation.top1 == 100.0
    probe = task.evaluation.probe
    assert probe is not None and probe.flagged and probe.top1_original == 100.0 and probe.top1_perturbed < 30
    assert any(
        w.startswith("memorised (submitted weights): accuracy falls from 100.0%")
        for w in corpus.attacker.result.warnings
    )
    honest = corpus.task("honest").evaluation.probe
    assert honest is not None and not honest.flagged


def test_messages_reach_the_terminal_as_plain_text(corpus: Corpus) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="truecolor", width=2000)
    _print_scores(corpus.attacker.result, console)
    text = out.getvalue()
    assert "\x1b]52" not in text and "\x1b]0;" not in text and "\x07" not in text
    assert "[green]all checks pass[/] [/x] done" in text.replace("\n", "")
