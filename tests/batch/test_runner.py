"""`grader run-all` on a class of 33: killed midway and resumed, then the same class on Ray.

The class (rubric cifar10-cnn): 18 honest students with .py models and 5 with notebooks,
each with weights of its own seed; three broken submissions (syntax error, missing
weights, wrong output shape); seven hostile ones, six of them models from the attack
corpus (tests/attacks/corpus) and a whole pickled model as weights (graded from its tensors,
with a note); a folder whose name is no student id; and, as a learning platform's download of
a class leaves them, one notebook student whose work lies a folder down (an archive of the
folder, unpacked), one student handed in as an unpacked archive and one as a loose notebook.
Everything runs through the real CLI, sandboxed with bubblewrap, and Ray starts a real local
instance.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from tests.conftest import FILES, load_module, pdf_text, require_docker_or_skip

pytestmark = pytest.mark.slow
GRADER = str(Path(sys.executable).parent / "grader")
NET = (FILES / "submissions" / "B000000001" / "model.py").read_text()
HONEST_PY = [f"B1{n:08d}" for n in range(18)]
HONEST_NB = [f"B2{n:08d}" for n in range(5)]
BROKEN = {"B300000000": "syntax", "B300000001": "no_weights", "B300000002": "wrong_shape"}
# From the attack corpus: (stage, words of the message); ("definitions", words of the note)
# where the sandbox stopped the module-level code and the model was built from the file's
# definitions; or None where the attack only tries to fake a result. The last two are graded
# normally.
CORPUS = {
    "B400000000": ("endless_forward", ("timeout", "time limit")),
    "B400000001": ("os_exit_zero", ("sandbox", "exit code 0")),
    "B400000002": ("fork_bomb", ("definitions", "BlockingIOError")),
    "B400000003": ("net_dns", ("definitions", "name resolution")),
    "B400000004": ("stdout_flood", None),
    "B400000005": ("patch_argmax", None),
}
PICKLED = "B400000006"
HOSTILE = [*CORPUS, PICKLED]
BAD_NAME = "not a student id"
WRAPPED = HONEST_NB[0]  # its files in WRAPPED/WRAPPED_lab3/, with macOS's archive litter beside
ZIPPED, LOOSE = "B500000000", "B500000001"  # B500000000.zip, B500000001.ipynb
STUDENTS = HONEST_PY + HONEST_NB + list(BROKEN) + list(HOSTILE)
TIMEOUT_S = "25"
ATTACKS = Path(__file__).parents[1] / "attacks" / "corpus"
TINY_PARAMS = 5_370  # the zoo's TinyCNN, which the corpus's attacks build on


def _save_weights(folder: Path, seed: int, model_source: str = NET) -> None:
    import torch

    module_path = folder / "_weights_src.py"
    module_path.write_text(model_source)
    torch.manual_seed(seed)
    net = load_module(module_path).Net()
    module_path.unlink()
    (folder / "weights").mkdir(exist_ok=True)
    torch.save(net.state_dict(), folder / "weights" / "model.pt")


def _manifest(folder: Path, claimed: float | None = None, model: str | None = None) -> None:
    task: dict[str, object] = {}
    if claimed is not None:
        task["claimed_test_accuracy"] = claimed
    if model:
        task["model"] = model
    data = {"student_id": folder.name, "assignment": "cifar10-cnn", "tasks": {"cnn": task}}
    (folder / "submission.yaml").write_text(json.dumps(data))


def _notebook(folder: Path) -> None:
    cells = [
        nbformat.v4.new_code_cell("!pip install torchsummary\nimport torch\nfrom torch import nn"),
        nbformat.v4.new_code_cell(NET.replace("from torch import nn\n", "")),
        nbformat.v4.new_code_cell(
            "model = Net()\nfor epoch in range(100):\n    raise SystemExit('the training loop ran')"
        ),
    ]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), folder / "lab.ipynb")


def _from_corpus(folder: Path, attack: str) -> None:
    """The attack's model.py on top of the corpus's honest TinyCNN (common.py) and its weights."""
    import torch

    shutil.copy(ATTACKS / attack / "model.py", folder / "model.py")
    shutil.copy(FILES / "zoo" / "nets.py", folder / "common.py")
    torch.manual_seed(7)
    (folder / "weights").mkdir()
    torch.save(load_module(FILES / "zoo" / "nets.py").TinyCNN().state_dict(), folder / "weights" / "model.pt")


def _pickled(folder: Path) -> None:
    import torch

    (folder / "model.py").write_text(NET)
    (folder / "weights").mkdir()
    torch.save(load_module(folder / "model.py").Net(), folder / "weights" / "model.pt")


def _broken(folder: Path, kind: str) -> None:
    if kind == "syntax":
        (folder / "model.py").write_text(NET.replace("def forward(self, x):", "def forward(self, x)"))
        _save_weights(folder, 3)
    elif kind == "no_weights":
        (folder / "model.py").write_text(NET)
    else:
        wrong = NET.replace("nn.Linear(8 * 8 * 8, 10)", "nn.Linear(8 * 8 * 8, 7)")
        (folder / "model.py").write_text(wrong)
        _save_weights(folder, 3, wrong)


@pytest.fixture(scope="module")
def klass(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("class")
    for seed, sid in enumerate(HONEST_PY):
        folder = root / sid
        folder.mkdir()
        (folder / "model.py").write_text(NET)
        _save_weights(folder, seed)
        _manifest(folder, claimed=10.0 + seed)
    for seed, sid in enumerate(HONEST_NB, start=100):
        folder = root / sid
        folder.mkdir()
        _notebook(folder)
        _save_weights(folder, seed)
        _manifest(folder, model="lab.ipynb:Net")
    for sid, kind in BROKEN.items():
        (root / sid).mkdir()
        _broken(root / sid, kind)
    for sid, (attack, _expected) in CORPUS.items():
        (root / sid).mkdir()
        _from_corpus(root / sid, attack)
    (root / PICKLED).mkdir()
    _pickled(root / PICKLED)
    (root / BAD_NAME).mkdir()
    (root / BAD_NAME / "model.py").write_text(NET)
    (root / WRAPPED).rename(root / "unpacked")
    (root / WRAPPED).mkdir()
    (root / "unpacked").rename(root / WRAPPED / f"{WRAPPED}_lab3")
    (root / WRAPPED / "__MACOSX").mkdir()
    shutil.make_archive(str(root / ZIPPED), "zip", root / HONEST_PY[0])
    shutil.copy(root / WRAPPED / f"{WRAPPED}_lab3" / "lab.ipynb", root / f"{LOOSE}.ipynb")
    return root


def _run_all(klass: Path, out: Path, data: Path, *extra: str) -> list[str]:
    return [
        GRADER, "run-all", str(klass), "--rubric", "cifar10-cnn", "--out", str(out),
        "--data-dir", str(data), "--sandbox", "bwrap", "--timeout", TIMEOUT_S, *extra,
    ]  # fmt: skip


def _landed(out: Path) -> dict[str, str]:
    """Students whose grading is in place, with the time their results were written."""
    found = {}
    for record in out.glob("*/grading.json"):
        results = json.loads((record.parent / "results.json").read_text())
        found[record.parent.name] = results["graded_at"]
    return found


def _gradebook(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "gradebook.csv", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    ids = [r["student_id"] for r in rows]
    assert len(ids) == len(set(ids)), "a student has more than one row"
    return {r["student_id"]: r for r in rows}


@pytest.fixture(scope="module")
def local_run(klass: Path, small_cifar: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("out-local")
    env = {k: v for k, v in os.environ.items() if k != "GRADER_DATA_DIR"}
    first = subprocess.Popen(
        _run_all(klass, out, small_cifar, "--jobs", "2"), env=env, start_new_session=True
    )
    deadline = time.monotonic() + 900
    while len(_landed(out)) < 8 and time.monotonic() < deadline:
        assert first.poll() is None, "the run ended before it could be killed midway"
        time.sleep(0.5)
    first.send_signal(signal.SIGKILL)  # the driver only: its workers must die with it
    first.wait()
    before = _landed(out)
    assert 8 <= len(before) < len(STUDENTS)
    second = subprocess.run(
        _run_all(klass, out, small_cifar, "--jobs", "2"),
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert second.returncode == 0, second.stderr
    third = subprocess.run(
        _run_all(klass, out, small_cifar, "--jobs", "2"), env=env, capture_output=True, text=True, timeout=600
    )
    return {"out": out, "before": before, "second": second, "third": third}


def test_every_student_has_exactly_one_correct_row(local_run: dict) -> None:
    out: Path = local_run["out"]
    book = _gradebook(out)
    assert set(book) == {*STUDENTS, BAD_NAME, ZIPPED, LOOSE}
    for sid in STUDENTS:
        results = json.loads((out / sid / "results.json").read_text())
        assert float(book[sid]["total"]) == pytest.approx(results["total"])
        assert book[sid]["1"] == f"{results['items'][0]['score']:g}"
    for sid in HONEST_PY + HONEST_NB:
        results = json.loads((out / sid / "results.json").read_text())
        assert results["tasks"]["cnn"]["status"] == "ok", (sid, results["tasks"]["cnn"]["error"])
        assert results["tasks"]["cnn"]["params"] == 5370
        assert book[sid]["1"] == "10" and book[sid]["2"] == "20"
    assert book[BAD_NAME]["status"] == "failed" and book[BAD_NAME]["total"] == ""
    warnings = json.loads((out / WRAPPED / "results.json").read_text())["warnings"]
    assert any(f"lies in {WRAPPED}_lab3/ inside the folder" in w for w in warnings), warnings


def test_work_handed_in_as_an_archive_or_a_loose_file_is_refused_with_the_fix(local_run: dict) -> None:
    rows = {r["student_id"]: r for r in json.loads((local_run["out"] / "batch.json").read_text())["rows"]}
    assert rows[ZIPPED]["status"] == rows[LOOSE]["status"] == "failed"
    assert rows[ZIPPED]["reason"].startswith(f"{ZIPPED}.zip is an archive, not a submission folder: unpack")
    assert rows[LOOSE]["reason"].startswith(f"{LOOSE}.ipynb lies loose in the class folder: move it into")
    assert not (local_run["out"] / ZIPPED).exists() and not (local_run["out"] / LOOSE).exists()


def test_broken_and_hostile_students_fail_their_task_with_the_reason(local_run: dict) -> None:
    out: Path = local_run["out"]
    expected = {
        "B300000000": ("import", "SyntaxError"),
        "B300000001": ("weights", "weights/model.pt"),
        "B300000002": ("forward", "[1, 7]"),
        **{
            sid: outcome
            for sid, (_attack, outcome) in CORPUS.items()
            if outcome and outcome[0] != "definitions"
        },
    }
    for sid, (stage, words) in expected.items():
        task = json.loads((out / sid / "results.json").read_text())["tasks"]["cnn"]
        assert task["status"] == "error" and task["error_stage"] == stage, (
            sid,
            task["error_stage"],
            task["error"],
        )
        assert words in task["error"], (sid, task["error"])
    pickled = json.loads((out / PICKLED / "results.json").read_text())["tasks"]["cnn"]
    assert pickled["status"] == "ok" and pickled["weights_loaded"], pickled["error"]
    assert any("holds a whole pickled model (Net)" in note for note in pickled["notes"]), pickled["notes"]
    for sid, (_attack, outcome) in CORPUS.items():
        if outcome is None or outcome[0] == "definitions":
            task = json.loads((out / sid / "results.json").read_text())["tasks"]["cnn"]
            assert task["status"] == "ok" and task["params"] == TINY_PARAMS, (sid, task["error"])
            assert outcome is None or any(outcome[1] in note for note in task["notes"]), task["notes"]


def test_the_rerun_left_finished_students_alone(local_run: dict) -> None:
    after = _landed(local_run["out"])
    for sid, graded_at in local_run["before"].items():
        assert after[sid] == graded_at, f"{sid} was graded again"
    third = local_run["third"]
    assert third.returncode == 0 and f"0 graded, {len(STUDENTS)} unchanged, 3 failed" in " ".join(
        third.stderr.split()
    )


def test_class_outputs_link_every_report(local_run: dict) -> None:
    out: Path = local_run["out"]
    index = (out / "index.html").read_text()
    for sid in STUDENTS:
        assert f'href="{sid}/report.pdf"' in index
    assert (out / "class_report.pdf").stat().st_size > 10_000
    assert not (out / ".staging").exists() or not any((out / ".staging").iterdir())


def test_ray_executor_gives_identical_scores(
    local_run: dict, klass: Path, small_cifar: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GRADER_DATA_DIR"}
    done = subprocess.run(
        _run_all(klass, tmp_path, small_cifar, "--jobs", "2", "--executor", "ray"),
        env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    local, ray = _gradebook(local_run["out"]), _gradebook(tmp_path)
    columns = ["1", "2", "3", "4", "5", "total", "status"]
    assert {s: [r[c] for c in columns] for s, r in local.items()} == {
        s: [r[c] for c in columns] for s, r in ray.items()
    }


def test_overrides_change_only_their_cells_and_the_totals(local_run: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(local_run["out"], out)
    before = _gradebook(out)
    overrides = tmp_path / "overrides.csv"
    overrides.write_text(
        "student_id,item,score,comment,by\n"
        f"{HONEST_PY[0]},5,8,clear write-up,ta-lin\n"
        f"{HONEST_PY[1]},3,50,accuracy re-checked by hand,ta-lin\n"
    )
    done = subprocess.run(
        [GRADER, "report", str(out), "--rubric", "cifar10-cnn", "--overrides", str(overrides)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    after = _gradebook(out)
    changed = {(s, c) for s in before for c in before[s] if before[s][c] != after[s][c]}
    first, second = HONEST_PY[0], HONEST_PY[1]
    assert before[second]["3"] == "0"  # random weights: under the rubric's 60% floor
    assert changed == {
        (first, "5"), (first, "total"), (first, "pending_manual"), (first, "status"),
        (second, "3"), (second, "total"),
    }  # fmt: skip
    assert after[HONEST_PY[0]]["5"] == "8"
    text = pdf_text(out / HONEST_PY[0] / "report.pdf", "-raw")
    assert "set by hand by ta-lin: clear write-up" in " ".join(text.split())


@pytest.mark.docker
def test_a_rerun_regrades_exactly_the_gradings_the_machine_failed(small_cifar: Path, tmp_path: Path) -> None:
    """Three students graded; one is graded again while Docker cannot start its jobs (an unknown
    runtime: the machine's failure, not the student's). The next run grades that one only."""
    require_docker_or_skip()
    klass = tmp_path / "class"
    for seed, sid in enumerate(["F000000001", "F000000002", "F000000003"]):
        folder = klass / sid
        folder.mkdir(parents=True)
        (folder / "model.py").write_text(NET)
        _save_weights(folder, seed)
    out = tmp_path / "out"
    base = [str(klass), "--rubric", "cifar10-cnn", "--out", str(out), "--data-dir", str(small_cifar)]
    base += ["--sandbox", "docker", "--timeout", "120"]

    def run(*extra: str) -> dict[str, dict]:
        done = subprocess.run([GRADER, "run-all", *base, *extra], capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr
        return {r["student_id"]: r for r in json.loads((out / "batch.json").read_text())["rows"]}

    assert {r["status"] for r in run().values()} == {"graded"}
    broken = run("--only", "F000000002", "--force", "--docker-runtime", "no-such-runtime")
    row = broken["F000000002"]
    assert row["status"] == "graded" and row["regrade"], row
    assert "Docker could not start the job" in row["regrade"][0]
    results = json.loads((out / "F000000002" / "results.json").read_text())
    assert results["tasks"]["cnn"]["error_stage"] == "infrastructure" and results["regrade"]
    assert "Not the student's fault: regrade" in pdf_text(out / "F000000002" / "report.pdf", "-raw")
    again = run()
    assert {sid: r["status"] for sid, r in again.items()} == {
        "F000000001": "skipped", "F000000002": "graded", "F000000003": "skipped",
    }  # fmt: skip
    assert again["F000000002"]["regrade"] == [] and again["F000000002"]["total"] > 0
