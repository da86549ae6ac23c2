"""`grader ci` as CI runs it: the GitHub Action's and the GitLab template's own commands.

A throwaway git repository holds the sample submission (the 5,370-parameter CNN of
tests/files/submissions/B000000001 with seeded random weights); the course's rubric
lives outside it. The commands are read from action.yml and examples/gitlab-ci.yml
and run as written, install steps included: apt-get through sudo, pip installing the
grader from a copy of this checkout into a new virtualenv (the Python a runner starts
with), and curl fetching CIFAR-10 from a file:// URL. The inputs the tests change are
ones a course may set: that URL, and no extra PyTorch index (this machine's pip has its
own). Steps that `uses:` another action (setup-python, cache, upload-artifact) are
GitHub's, not ours, and are not run. The GitLab job runs after the Action in the same
virtualenv, so its pip install finds PyTorch already there, as on a warm runner.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import yaml
from lxml import etree

import grader.ci
from grader.ci import CiRun, policy_problems, publish, repository_student_id, resolve_profile
from grader.config import REPO_ROOT, Settings
from grader.errors import UsageError
from grader.results import GradeResult
from grader.rubric import Rubric
from grader.submission import Checkout
from tests.conftest import (
    FILES,
    PACKAGES_REPORT,
    TEST_PER_CLASS,
    copy_checkout,
    junit_schema,
    load_module,
    locked_versions,
    pdf_text,
    read_packages_report,
    skip_unless_required,
)
from tests.graded import GRADESCOPE_TEST, GRADESCOPE_TOP, ci_graded

ACTION = REPO_ROOT / "action.yml"
CLASSROOM = REPO_ROOT / "examples" / "github-classroom.yml"
GITLAB = REPO_ROOT / "examples" / "gitlab-ci.yml"
INSTALL_STEPS = {"system", "install", "data"}  # apt-get, pip install, CIFAR-10 download
VENV_BIN = str(Path(sys.executable).parent)
EXPRESSION = re.compile(r"\$\{\{\s*(.+?)\s*\}\}")
CONTAINS = re.compile(r"contains\(([\w.-]+), '([^']*)'\)")


def require_install_steps_or_skip() -> None:
    """The install steps need apt-get and sudo as a runner has them; in CI
    (GRADER_REQUIRE_INSTALL_STEPS=1) a machine without them is a failure, not a skip."""
    problem = None
    if shutil.which("apt-get") is None:
        problem = "no apt-get on this machine"
    elif shutil.which("sudo") is None:
        problem = "no sudo (scripts/setup.sh --docker installs it)"
    elif subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode != 0:
        problem = "sudo asks for a password"
    if problem:
        skip_unless_required(f"the install steps cannot run: {problem}", "GRADER_REQUIRE_INSTALL_STEPS")


@pytest.fixture(scope="module")
def runner_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The bin/ of a new, empty virtualenv: what setup-python (or the job's image) starts with."""
    require_install_steps_or_skip()
    root = tmp_path_factory.mktemp("runner-python")
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    yield root / "venv" / "bin"
    shutil.rmtree(root)  # about 6 GB with PyTorch


@pytest.fixture(scope="module")
def grader_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout as the Action's repository holds it."""
    return copy_checkout(tmp_path_factory.mktemp("grader-source"))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runner's workspace: the student's repository in submission/, the course's in course/."""
    import torch

    root = tmp_path_factory.mktemp("workspace")
    repo = root / "submission"
    shutil.copytree(FILES / "submissions" / "B000000001", repo)
    torch.manual_seed(0)
    (repo / "weights").mkdir()
    torch.save(load_module(repo / "model.py").Net().state_dict(), repo / "weights" / "model.pt")
    git = ["git", "-c", "user.name=Student", "-c", "user.email=s@example.edu"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "-C", str(repo), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(repo), "commit", "-q", "-m", "lab 2"], check=True)
    (root / "course" / "rubrics").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "rubrics" / "cifar10-cnn.yaml", root / "course" / "rubrics" / "lab2.yaml")
    return root


def base_env(tmp: Path, data: Path | None, bin_dir: str = VENV_BIN) -> dict[str, str]:
    """The job's environment, with `bin_dir`'s python and grader first on PATH."""
    dropped = ("GRADER_DATA_DIR", "GITHUB_", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    path = [p for p in env["PATH"].split(os.pathsep) if p != VENV_BIN]
    env["PATH"] = os.pathsep.join([bin_dir, *path])
    env["TMPDIR"] = str(tmp)
    if data is not None:
        env["GRADER_DATA_DIR"] = str(data)  # CIFAR-10 already on a self-hosted runner
    return env


def bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """As GitHub runs a `shell: bash` step (and GitLab a script): errexit and pipefail."""
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


# --- the GitHub Action -------------------------------------------------------------------


def action_inputs(overrides: dict[str, str] | None = None) -> dict[str, str]:
    """The inputs the course's workflow passes, over the action's defaults."""
    action = yaml.safe_load(ACTION.read_text())
    workflow = yaml.safe_load(CLASSROOM.read_text())
    (step,) = [s for s in workflow["jobs"]["grade"]["steps"] if s.get("id") == "grader"]
    inputs = {name: str(spec.get("default", "")) for name, spec in action["inputs"].items()}
    inputs |= {k: str(v) for k, v in step["with"].items()} | (overrides or {})
    missing = [n for n, spec in action["inputs"].items() if spec.get("required") and not inputs[n]]
    assert not missing, f"the workflow does not give required inputs {missing}"
    return inputs


def evaluate(expression: str, context: dict[str, str]) -> str:
    """The expressions action.yml uses: a context name, or `a || b` (the first non-empty)."""
    for name in expression.split("||"):
        if value := context.get(name.strip(), ""):
            return value
    return ""


def expand(value: str, context: dict[str, str]) -> str:
    return EXPRESSION.sub(lambda m: evaluate(m.group(1), context), value)


def condition(expression: str, context: dict[str, str]) -> bool:
    """A step's `if:`, for the forms action.yml uses."""
    if expression == "always()":
        return True
    match = CONTAINS.fullmatch(expression)
    assert match, f"the test does not know how to evaluate `if: {expression}`"
    return match.group(2) in context[match.group(1)]


def run_action(
    workspace: Path,
    env: dict[str, str],
    inputs: dict[str, str],
    install: bool = False,
    action_path: Path = REPO_ROOT,
) -> list[Any]:
    """The `run:` steps of action.yml in order, as the runner would run them: each with its
    own step-output file, whose lines later steps read as `steps.<id>.outputs.<name>`.
    Without `install`, the install steps are left out (the grader is already installed)."""
    action = yaml.safe_load(ACTION.read_text())
    context = {f"inputs.{k}": v for k, v in inputs.items()}
    context |= {"github.action_path": str(action_path), "runner.temp": env["RUNNER_TEMP"]}
    done = []
    for step in action["runs"]["steps"]:
        if "run" not in step or (step["id"] in INSTALL_STEPS and not install):
            continue
        if "if" in step and not condition(step["if"], context):
            continue
        assert "${{" not in step["run"], "expressions belong in env:, not in the script"
        output = Path(env["RUNNER_TEMP"]) / f"output-{step['id']}"
        step_env = env | {k: expand(str(v), context) for k, v in step.get("env", {}).items()}
        step_env["GITHUB_OUTPUT"] = str(output)
        done.append((step["id"], bash(step["run"], workspace, step_env)))
        lines = output.read_text().splitlines() if output.exists() else []
        context |= {f"steps.{step['id']}.outputs.{k}": v for k, _, v in (ln.partition("=") for ln in lines)}
    return done


@pytest.fixture(scope="module")
def github_run(
    workspace: Path,
    small_cifar: Path,
    runner_python: Path,
    grader_source: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    runner = tmp_path_factory.mktemp("runner")
    env = base_env(runner, None, str(runner_python))
    env |= {"RUNNER_TEMP": str(runner), "GITHUB_STEP_SUMMARY": str(runner / "step_summary.md")}
    (runner / "step_summary.md").write_text("# Tests of an earlier step\n\n")
    inputs = action_inputs({"data": small_cifar.as_uri(), "torch-index": ""})
    done = run_action(workspace, env, inputs, install=True, action_path=grader_source)
    return {"steps": done, "runner": runner, "out": workspace / inputs["out"], "bin": runner_python}


@pytest.mark.install
def test_action_installs_and_grades_the_pushed_repository(
    github_run: dict[str, Any], small_cifar: Path
) -> None:
    assert [name for name, _ in github_run["steps"]] == ["system", "install", "data", "grade"]
    for name, done in github_run["steps"]:
        assert done.returncode == 0, f"step {name}: {done.stderr}"
    where = "import grader, torch; print(grader.__file__, torch.__version__)"
    installed = subprocess.run(
        [github_run["bin"] / "python", "-c", where],
        cwd=github_run["runner"],  # not this checkout, whose grader/ would shadow the installed one
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert installed.startswith(str(github_run["bin"].parent)) and "2.14.1" in installed
    downloaded = github_run["runner"] / "grader-data" / "cifar10-archive"
    assert downloaded.read_bytes() == small_cifar.read_bytes()
    _, done = github_run["steps"][-1]
    out = github_run["out"]
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [
        "grader-results.json", "junit.xml", "report.html", "report.pdf", "results.json", "summary.md",
    ]  # fmt: skip
    record = json.loads((out / "grader-results.json").read_text())
    task = record["tasks"]["cnn"]
    assert task["status"] == "ok" and task["params"] == 5370 and task["macs"]["thop"] == 259072
    evaluation = task["evaluation"]
    assert evaluation["subset_per_class"] == 100 and evaluation["n_images"] == 10 * TEST_PER_CLASS
    assert evaluation["top1"] == pytest.approx(host_accuracy(small_cifar), abs=0.01)
    items = {i["id"]: (i["score"], i["status"]) for i in record["items"]}
    assert items == {"1": (10, "pass"), "2": (20, "pass"), "3": (0, "fail"), "4": (0, "not_checked"),
                     "5": (0, "manual")}  # fmt: skip
    assert (record["total"], record["max_total"], record["not_checked"]) == (30, 100, 10)
    outputs = (github_run["runner"] / "output-grade").read_text().splitlines()
    assert outputs == ["score=30", "max-score=100", "profile=quick", "passed=true"]


@pytest.mark.install
def test_action_installs_the_locked_versions(github_run: dict[str, Any]) -> None:
    printed = subprocess.run(
        [github_run["bin"] / "python", "-c", PACKAGES_REPORT],
        cwd=github_run["runner"],
        capture_output=True,
        check=True,
    ).stdout
    _, installed = read_packages_report(printed)
    assert {"torch", "torchvision", "ultralytics-thop", "ptflops"} <= installed.keys()
    locked = locked_versions()
    # A local version label (PyTorch's CPU index: 2.14.1+cpu) meets a pin of its public version.
    differ = {
        name: (version, locked.get(name))
        for name, version in installed.items()
        if name not in ("pip", "grader") and version.partition("+")[0] != locked.get(name)
    }
    assert not differ, f"installed (version, locked version): {differ}"


def host_accuracy(small_cifar: Path) -> float:
    """The sample's top-1 accuracy computed here, without the sandbox, to compare with the grader's."""
    import torch

    from grader import data as datasets
    from grader.config import Settings
    from grader.rubric import find_rubric, load_rubric

    split = datasets.load_split(small_cifar, "test", Settings().cache_dir)
    pre = load_rubric(find_rubric("cifar10-cnn")).preprocess
    x = torch.from_numpy(split.images()).permute(0, 3, 1, 2).float().contiguous() / 255  # (N, 3, 32, 32)
    x = (x - torch.tensor(pre.mean)[:, None, None]) / torch.tensor(pre.std)[:, None, None]
    torch.manual_seed(0)  # the same weights as the workspace's weights/model.pt
    model = load_module(FILES / "submissions" / "B000000001" / "model.py").Net()
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(dim=1).numpy()
    return round(100.0 * float(np.mean(pred == split.labels())), 2)


@pytest.mark.install
def test_action_junit_matches_the_schema_and_the_scores(github_run: dict[str, Any]) -> None:
    doc = etree.parse(str(github_run["out"] / "junit.xml"))
    junit_schema().assertValid(doc)
    cases = doc.findall(".//testcase")
    assert [c.get("classname") for c in cases] == ["cnn"] * 5
    assert cases[1].get("name") == "2: At most 1,000,000 parameters [20/20 pts]"
    points = [re.search(r"\[(\S+) pts\]$", c.get("name", "")) for c in cases]
    assert [m and m.group(1) for m in points] == ["10/10", "20/20", "0/50", "0/10", "0/10"]
    failure = cases[2].find("failure")
    assert failure is not None and "on 200 test images (a subset" in failure.get("message", "")
    assert [c.find("skipped") is not None for c in cases] == [False, False, False, True, True]
    suite = doc.getroot().find("testsuite")
    assert doc.getroot().get("failures") == "1" and suite is not None and suite.get("skipped") == "2"


@pytest.mark.install
def test_action_gradescope_json_follows_the_spec(github_run: dict[str, Any]) -> None:
    data = json.loads((github_run["out"] / "results.json").read_text())
    assert set(data) <= GRADESCOPE_TOP and {"score", "tests", "execution_time", "leaderboard"} <= set(data)
    assert data["score"] == 30 and isinstance(data["execution_time"], int) and data["execution_time"] >= 1
    assert data["extra_data"]["max_score"] == 100 and data["visibility"] == "visible"
    for test in data["tests"]:
        assert set(test) <= GRADESCOPE_TEST and {"name", "score", "max_score", "output"} <= set(test)
        assert test.get("status", "passed") in ("passed", "failed")
    assert [(t["score"], t["max_score"]) for t in data["tests"]] == [
        (10, 10),
        (20, 20),
        (0, 50),
        (0, 10),
        (0, 10),
    ]
    board = {e["name"]: e for e in data["leaderboard"]}
    assert board["Parameters"] == {"name": "Parameters", "value": 5370, "order": "asc"}
    record = json.loads((github_run["out"] / "grader-results.json").read_text())
    assert board["Accuracy"]["value"] == record["tasks"]["cnn"]["evaluation"]["top1"]


@pytest.mark.install
def test_action_step_summary_and_pdf(github_run: dict[str, Any]) -> None:
    summary = (github_run["runner"] / "step_summary.md").read_text()
    assert summary.startswith("# Tests of an earlier step\n\n## CIFAR-10 CNN")
    record = json.loads((github_run["out"] / "grader-results.json").read_text())
    top1 = record["tasks"]["cnn"]["evaluation"]["top1"]
    for line in (
        "**30 / 100 points** (profile `quick`)",
        "✅ **CI check passed**",
        "| 2 | cnn | At most 1,000,000 parameters | 20 / 20 | ✅ pass |",
        "| **Total** | | | **30 / 100** | | |",
        "| cnn | parameters | 5,370 | 1,000,000 | ✅ yes |",
        "| cnn | MACs (thop) | 259,072 | — | — |",
        f"| cnn | {top1:.2f}% |",
        "| 200 (first 100 per class) | 85.00% |",
    ):
        assert line in summary
    text = pdf_text(github_run["out"] / "report.pdf", "-raw")
    assert "not checked" in text and "10 points not checked" in text


class _RubricServer(http.server.BaseHTTPRequestHandler):
    body: ClassVar[bytes] = b""
    seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization"))
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def rubric_url(workspace: Path) -> Iterator[str]:
    _RubricServer.body = (workspace / "course" / "rubrics" / "lab2.yaml").read_bytes()
    _RubricServer.seen = []
    server = http.server.HTTPServer(("127.0.0.1", 0), _RubricServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/rubrics/lab2.yaml"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.slow
def test_action_fetches_a_rubric_url_with_the_token(workspace: Path, rubric_url: str, tmp_path: Path) -> None:
    env = base_env(tmp_path, None) | {"RUNNER_TEMP": str(tmp_path)}
    inputs = action_inputs(
        {"rubric": rubric_url, "rubric-token": "s3cret", "data": str(tmp_path / "no-data")}
    )
    ((_, done),) = run_action(workspace, env, inputs)
    # The rubric was fetched and parsed: grading stops only at the missing data (exit 4).
    assert done.returncode == 4 and "no-data (--data-dir) does not exist" in done.stderr
    assert _RubricServer.seen == ["Bearer s3cret"]
    assert (tmp_path / "rubric.yaml").read_bytes() == _RubricServer.body


# --- the GitLab template -----------------------------------------------------------------


@pytest.mark.install
def test_gitlab_template_installs_grades_and_reports_junit(
    workspace: Path, small_cifar: Path, runner_python: Path, grader_source: Path, tmp_path: Path
) -> None:
    job = yaml.safe_load(GITLAB.read_text())["grade"]
    project = tmp_path / "B000000001"
    subprocess.run(["git", "clone", "-q", str(workspace / "submission"), str(project)], check=True)
    env = base_env(tmp_path, None, str(runner_python)) | {"CI_PROJECT_DIR": str(project)}
    env |= {k: os.path.expandvars(str(v)) for k, v in job["variables"].items()}
    # The course group's variables, which take precedence over the job's own.
    env |= {
        "GRADER_RUBRIC": str(workspace / "course" / "rubrics" / "lab2.yaml"),  # a "File" variable
        "GRADER_SOURCE": str(grader_source),
        "GRADER_DATA_URL": small_cifar.as_uri(),
        "GRADER_TORCH_INDEX": "",
    }
    done = bash("\n".join([*job["before_script"], *job["script"]]), project, env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "grader-data" / "cifar10-archive").read_bytes() == small_cifar.read_bytes()
    junit = project / job["artifacts"]["reports"]["junit"]
    doc = etree.parse(str(junit))
    junit_schema().assertValid(doc)
    props = {p.get("name"): p.get("value") for p in doc.findall("testsuite/properties/property")}
    assert (props["student_id"], props["score"], props["max_score"]) == ("B000000001", "30", "100")
    assert all((project / path).is_dir() for path in job["artifacts"]["paths"])
    gradescope = json.loads((junit.parent / "results.json").read_text())
    assert {"name": "Parameters", "value": 5370, "order": "asc"} in gradescope["leaderboard"]


@pytest.mark.slow
def test_a_broken_hard_limit_fails_the_job(workspace: Path, small_cifar: Path, tmp_path: Path) -> None:
    rubric = yaml.safe_load((workspace / "course" / "rubrics" / "lab2.yaml").read_text())
    rubric["items"][1]["max_params"] = 5000
    (tmp_path / "tight.yaml").write_text(yaml.safe_dump(rubric))
    env = base_env(tmp_path, small_cifar)
    args = f"--rubric {tmp_path / 'tight.yaml'} --out {tmp_path / 'out'} --sandbox bwrap"
    done = bash(f"grader ci {workspace / 'submission'} {args}", tmp_path, env)
    assert done.returncode == 1, done.stderr
    assert "CI check failed: item 2 (At most 1,000,000 parameters): 5,370 parameters, over the limit of" in (
        " ".join(done.stderr.split())
    )
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "❌ **CI check failed**" in summary and "| cnn | parameters | 5,370 | 5,000 | ❌ no |" in summary
    never = bash(f"grader ci {workspace / 'submission'} {args} --fail-on never", tmp_path, env)
    assert never.returncode == 0, never.stderr


# --- the CI run's policy, profiles and publishing, below the CLI --------------------------


def test_scores_of_the_sample_result(cnn_rubric: Rubric) -> None:
    result = ci_graded(cnn_rubric)
    assert [(i.score, i.status) for i in result.items] == [
        (10, "pass"), (20, "pass"), (25, "partial"), (0, "not_checked"), (0, "manual"),
    ]  # fmt: skip
    assert (result.total, result.max_total, result.not_checked, result.pending_manual) == (55, 100, 10, 10)
    assert "first 100 test images of each class" in result.items[2].message
    assert result.to_dict()["not_checked"] == 10
    assert GradeResult.from_dict(result.to_dict()).items == result.items


def test_policy_levels(cnn_rubric: Rubric) -> None:
    fine, over, broken = (
        ci_graded(cnn_rubric),
        ci_graded(cnn_rubric, params=2_000_000),
        ci_graded(cnn_rubric, error="weights/model.pt is missing"),
    )
    low = ci_graded(cnn_rubric, accuracy=50.0)  # item 3 fails, no limit broken
    assert [len(policy_problems(r, "limits")) for r in (fine, over, broken, low)] == [0, 1, 1, 0]
    assert [len(policy_problems(r, "load")) for r in (fine, over, broken, low)] == [0, 0, 1, 0]
    # Item 3's partial credit in `fine` and `over` is a failure, as junit.xml counts it.
    assert [len(policy_problems(r, "any")) for r in (fine, over, broken, low)] == [1, 2, 3, 1]
    assert policy_problems(fine, "any") == [f"item 3 (Test accuracy (full points at 85%)): partial credit: "
                                            f"25 of 50 points; {fine.items[2].message}"]  # fmt: skip
    assert [len(policy_problems(r, "never")) for r in (fine, over, broken, low)] == [0, 0, 0, 0]
    stopped = "task cnn stopped at stage weights: weights/model.pt is missing"
    assert policy_problems(broken, "load") == [stopped]


def test_publish_appends_summary_and_step_outputs(cnn_rubric: Rubric, tmp_path: Path) -> None:
    summary_file = tmp_path / "summary.md"
    summary_file.write_text("# earlier step\n")
    (tmp_path / "out.md").write_text("the summary\n")
    run = CiRun(ci_graded(cnn_rubric), "quick", 3.0, {"summary": tmp_path / "out.md"}, ["a problem"])
    env = {"GITHUB_STEP_SUMMARY": str(summary_file), "GITHUB_OUTPUT": str(tmp_path / "outputs")}
    printed: list[str] = []
    publish(run, env, printed.append)
    assert printed == []  # not on GitHub Actions: no workflow command
    publish(run, {"GITHUB_ACTIONS": "true"}, printed.append)
    assert printed == ["::notice title=Autograding complete::Points 55/100"]
    assert summary_file.read_text() == "# earlier step\nthe summary\n"
    outputs = (tmp_path / "outputs").read_text().splitlines()
    assert outputs == ["score=55", "max-score=100", "profile=quick", "passed=false"]


@pytest.mark.parametrize(
    ("repository", "actor", "student"),
    [
        ("my-course/lab2-chen-yt", "chen-yt", "chen-yt"),  # the student pushed
        ("my-course/cifar10-cnn-chen-yt", "ta-lin", "chen-yt"),  # after the rubric's id
        ("my-course/lab2-alice", "ta-lin", "alice"),  # at the last hyphen
        ("my-course/lab2-Alice", "alice", "Alice"),  # usernames ignore case; the name keeps it
        ("my-course/solutions", "ta-lin", None),
        ("", "", None),
    ],
)
def test_student_id_from_a_github_classroom_repository(repository: str, actor: str, student: str) -> None:
    env = {"GITHUB_REPOSITORY": repository, "GITHUB_ACTOR": actor}
    assert repository_student_id(env, "cifar10-cnn") == student


def test_run_ci_hands_the_repositorys_student_id_to_the_grading(
    cnn_rubric: Rubric, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []

    def grade(*args: Any, checkout: Checkout) -> None:
        seen.append(checkout)
        raise UsageError("stop here")

    monkeypatch.setattr(grader.ci, "grade", grade)
    env = {"GITHUB_REPOSITORY": "my-course/lab2-chen-yt", "GITHUB_ACTOR": "chen-yt"}
    for given in (env, None):
        with pytest.raises(UsageError, match="stop here"):
            grader.ci.run_ci(tmp_path, cnn_rubric, Settings(), "quick", "limits", env=given)
    assert seen == [Checkout("chen-yt"), Checkout(None)]


def test_profiles() -> None:
    assert resolve_profile("auto", "cpu") == "quick"
    assert resolve_profile("auto", "cuda") == "full"
    assert resolve_profile("full", "cpu") == "full"
    with pytest.raises(UsageError, match="--profile 'fast'"):
        resolve_profile("fast", "cpu")
