"""`grader ci` as CI runs it: the GitHub Action's and the GitLab template's own commands.

A throwaway git repository holds the sample submission (the 5,370-parameter CNN of
tests/files/submissions/B000000001 with seeded random weights); the course's rubric
lives outside it. The commands are read from action.yml and examples/gitlab-ci.yml
and run as written; only the install steps are left out (the grader is installed).
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

from grader.config import REPO_ROOT
from tests.conftest import FILES, TEST_PER_CLASS, load_module
from tests.report.test_ci_writers import GRADESCOPE_TEST, GRADESCOPE_TOP

ACTION = REPO_ROOT / "action.yml"
CLASSROOM = REPO_ROOT / "examples" / "github-classroom.yml"
GITLAB = REPO_ROOT / "examples" / "gitlab-ci.yml"
INSTALL_STEPS = {"system", "install", "data"}  # apt-get, pip install, CIFAR-10 download
VENV_BIN = str(Path(sys.executable).parent)
EXPRESSION = re.compile(r"\$\{\{\s*([\w.-]+)\s*\}\}")


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


def base_env(tmp: Path, data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRADER_DATA_DIR", "GITHUB_"))}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env['PATH']}"
    env["GRADER_DATA_DIR"] = str(data)  # what the CIFAR-10 download step leaves behind
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


def expand(value: str, context: dict[str, str]) -> str:
    return EXPRESSION.sub(lambda m: context[m.group(1)], value)


def run_action(workspace: Path, env: dict[str, str], inputs: dict[str, str]) -> list[Any]:
    """Every `run:` step of action.yml but the install steps, in order, as the runner would."""
    action = yaml.safe_load(ACTION.read_text())
    context = {f"inputs.{k}": v for k, v in inputs.items()}
    context |= {"github.action_path": str(REPO_ROOT), "runner.temp": env["RUNNER_TEMP"]}
    done = []
    for step in action["runs"]["steps"]:
        if "run" not in step or step.get("id") in INSTALL_STEPS:
            continue
        assert "${{" not in step["run"], "expressions belong in env:, not in the script"
        step_env = env | {k: expand(str(v), context) for k, v in step.get("env", {}).items()}
        done.append((step["id"], bash(step["run"], workspace, step_env)))
    return done


@pytest.fixture(scope="module")
def github_run(
    workspace: Path, small_cifar: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    runner = tmp_path_factory.mktemp("runner")
    env = base_env(runner, small_cifar)
    env |= {
        "RUNNER_TEMP": str(runner),
        "GITHUB_STEP_SUMMARY": str(runner / "step_summary.md"),
        "GITHUB_OUTPUT": str(runner / "output"),
    }
    (runner / "step_summary.md").write_text("# Tests of an earlier step\n\n")
    done = run_action(workspace, env, action_inputs())
    return {"steps": done, "runner": runner, "out": workspace / action_inputs()["out"]}


@pytest.mark.slow
def test_action_grades_the_pushed_repository(github_run: dict[str, Any], small_cifar: Path) -> None:
    assert [name for name, _ in github_run["steps"]] == ["grade"]
    _, done = github_run["steps"][0]
    assert done.returncode == 0, done.stderr
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
    outputs = (github_run["runner"] / "output").read_text().splitlines()
    assert outputs == ["score=30", "max-score=100", "profile=quick", "passed=true"]


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


@pytest.mark.slow
def test_action_junit_matches_the_schema_and_the_scores(github_run: dict[str, Any]) -> None:
    doc = etree.parse(str(github_run["out"] / "junit.xml"))
    etree.XMLSchema(etree.parse(str(FILES / "junit.xsd"))).assertValid(doc)
    cases = doc.findall(".//testcase")
    assert [c.get("classname") for c in cases] == ["cnn"] * 5
    assert cases[1].get("name") == "2: At most 1,000,000 parameters [20/20 pts]"
    scores = [{p.get("name"): p.get("value") for p in c.findall("properties/property")} for c in cases]
    assert [(s["score"], s["max_score"], s["status"]) for s in scores] == [
        ("10", "10", "pass"), ("20", "20", "pass"), ("0", "50", "fail"), ("0", "10", "not_checked"),
        ("0", "10", "manual"),
    ]  # fmt: skip
    failure = cases[2].find("failure")
    assert failure is not None and "on 200 test images (a subset" in failure.get("message", "")
    assert [c.find("skipped") is not None for c in cases] == [False, False, False, True, True]
    assert doc.getroot().get("failures") == "1" and doc.getroot().get("skipped") == "2"


@pytest.mark.slow
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


@pytest.mark.slow
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
    text = subprocess.run(
        ["pdftotext", "-raw", str(github_run["out"] / "report.pdf"), "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
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


def test_action_fetches_a_rubric_url_with_the_token(workspace: Path, rubric_url: str, tmp_path: Path) -> None:
    env = base_env(tmp_path, tmp_path) | {"RUNNER_TEMP": str(tmp_path)}
    inputs = action_inputs({"rubric": rubric_url, "rubric-token": "s3cret", "profile": "bogus"})
    ((_, done),) = run_action(workspace, env, inputs)
    # The rubric was fetched and parsed: grading stops only at the bad profile (a usage error).
    assert done.returncode == 2 and "--profile 'bogus': use auto, quick, full" in done.stderr
    assert _RubricServer.seen == ["Bearer s3cret"]
    assert (tmp_path / "rubric.yaml").read_bytes() == _RubricServer.body


# --- the GitLab template -----------------------------------------------------------------


@pytest.mark.slow
def test_gitlab_template_grades_and_reports_junit(workspace: Path, small_cifar: Path, tmp_path: Path) -> None:
    job = yaml.safe_load(GITLAB.read_text())["grade"]
    project = tmp_path / "B000000001"
    subprocess.run(["git", "clone", "-q", str(workspace / "submission"), str(project)], check=True)
    env = base_env(tmp_path, small_cifar) | {"CI_PROJECT_DIR": str(project)}
    env |= {k: os.path.expandvars(str(v)) for k, v in job["variables"].items()}
    env["GRADER_RUBRIC"] = str(workspace / "course" / "rubrics" / "lab2.yaml")  # a "File" variable
    done = bash("\n".join(job["script"]), project, env)
    assert done.returncode == 0, done.stderr
    junit = project / job["artifacts"]["reports"]["junit"]
    doc = etree.parse(str(junit))
    etree.XMLSchema(etree.parse(str(FILES / "junit.xsd"))).assertValid(doc)
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
