"""One GPU per job (grader/gpus.py): the driver's list of GPUs, how a batch hands them out, and
what each sandbox backend is told, checked through the list's seam on a machine without GPUs
(a folder of entries written as the driver writes /proc/driver/nvidia/gpus)."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from grader import gpus
from grader.batch import executors
from grader.batch.executors import BatchJob, LocalExecutor
from grader.batch.records import Row
from grader.batch.watchdog import Bounds
from grader.config import Settings
from grader.gpus import Gpu, GpuPool
from grader.jobs import job_gpu, run_task
from grader.rubric import find_rubric, load_rubric
from grader.sandbox import BwrapBackend, Job, Mount, Outcome
from grader.submission import TaskEntry
from tests.conftest import job_limits

GRADER = str(Path(sys.executable).parent / "grader")
# Bus ids in a different order from the device minors, as on real machines.
BUSES = {"0000:c1:00.0": 1, "0000:41:00.0": 3, "0000:01:00.0": 2, "0000:81:00.0": 0}


def driver_folder(root: Path, buses: dict[str, int] = BUSES) -> Path:
    for bus, minor in buses.items():
        (root / bus).mkdir(parents=True)
        (root / bus / "information").write_text(
            f"Model: \t\t NVIDIA H100 80GB HBM3\nIRQ:   \t\t 120\nGPU UUID: \t GPU-{minor}{minor}aa-b\n"
            f"Video BIOS: \t 96.00.99.00.01\nBus Type: \t PCIe\nDevice Minor: \t {minor}\n"
            f"Bus Location: \t {bus}\n"
        )
    return root


@pytest.fixture
def four_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Gpu]:
    monkeypatch.setenv("GRADER_GPU_INFO_DIR", str(driver_folder(tmp_path / "gpus")))
    return gpus.visible()


def test_the_driver_list_is_read_in_bus_order(four_gpus: list[Gpu]) -> None:
    assert [(g.index, g.minor, g.uuid) for g in four_gpus] == [
        (0, 2, "GPU-22aa-b"), (1, 3, "GPU-33aa-b"), (2, 0, "GPU-00aa-b"), (3, 1, "GPU-11aa-b"),
    ]  # fmt: skip
    assert four_gpus[2].device == "/dev/nvidia0" and four_gpus[2].model == "NVIDIA H100 80GB HBM3"
    assert four_gpus[2].describe() == "GPU 2: NVIDIA H100 80GB HBM3 (GPU-00aa-b)"


def test_no_driver_no_gpus_and_an_odd_entry_is_left_out(tmp_path: Path) -> None:
    assert gpus.visible(tmp_path / "absent") == []
    root = driver_folder(tmp_path / "gpus", {"0000:01:00.0": 0})
    (root / "0000:02:00.0").mkdir()
    (root / "0000:02:00.0" / "information").write_text("Model: something else entirely\n")
    assert [g.minor for g in gpus.visible(root)] == [0]


def test_this_machine_lists_what_its_driver_lists() -> None:
    listed = gpus.visible()
    assert len(listed) == len(list(gpus.DRIVER_GPUS.glob("*/information")))


def test_the_pool_spreads_jobs_over_the_gpus(four_gpus: list[Gpu]) -> None:
    pool = GpuPool(four_gpus)
    first = [pool.take() for _ in range(4)]
    assert sorted(g.index for g in first if g) == [0, 1, 2, 3]
    second = [pool.take() for _ in range(4)]
    assert sorted(g.index for g in second if g) == [0, 1, 2, 3]  # two jobs a GPU, none three
    pool.give_back(first[2])
    pool.give_back(second[2])
    assert pool.take() == first[2]
    assert GpuPool([]).take() is None


def test_a_cuda_job_gets_its_gradings_gpu_or_the_first(four_gpus: list[Gpu]) -> None:
    assert job_gpu(Settings(device="cuda")) == four_gpus[0]
    assert job_gpu(Settings(device="cuda", gpu=four_gpus[3])) == four_gpus[3]
    assert job_gpu(Settings(device="cpu", gpu=four_gpus[3])) is None


def _spec_of(tmp_path: Path) -> Job:
    (tmp_path / "sub").mkdir(exist_ok=True)
    return Job(["python3", "-c", "pass"], [Mount(tmp_path / "sub", "/submission")], "/submission", 10.0,
               job_limits(), tmp_path / "logs")  # fmt: skip


def test_bubblewrap_binds_only_the_jobs_gpu(four_gpus: list[Gpu], tmp_path: Path) -> None:
    argv = BwrapBackend().command(replace(_spec_of(tmp_path), gpu=four_gpus[2]))
    bound = [argv[i + 1] for i, arg in enumerate(argv) if arg.startswith("--dev-bind")]
    assert [d for d in bound if d.removeprefix("/dev/nvidia").isdigit()] == ["/dev/nvidia0"]
    assert {"/dev/nvidiactl", "/dev/nvidia-uvm"} <= set(bound)
    assert not any(arg.startswith("--dev-bind") for arg in BwrapBackend().command(_spec_of(tmp_path)))


def test_jobs_4_on_4_gpus_gives_each_grading_its_own(
    four_gpus: list[Gpu], tmp_path: Path, monkeypatch
) -> None:
    """The local executor, with the grading itself replaced by a recorder of what it was handed."""
    handed: list[Gpu | None] = []
    running, most = [0], [0]
    lock = threading.Lock()

    def grading(source: Path, student_id: str, rubric_file: Path, settings: Settings, *rest: object) -> Row:
        with lock:
            handed.append(settings.gpu)
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.3)
        with lock:
            running[0] -= 1
        return Row(student_id, str(source), "graded")

    monkeypatch.setattr(executors, "grade_supervised", grading)
    jobs = [BatchJob(tmp_path / f"S{i}", f"S{i}", "", tmp_path / f"S{i}.out", tmp_path / f"S{i}.log", [])
            for i in range(4)]  # fmt: skip
    rows = []
    settings = Settings(device="cuda")
    LocalExecutor(tmp_path / "r.yaml", settings, 4, Bounds(60.0, 2**30), four_gpus).run(
        jobs, lambda j, r: rows.append(r)
    )
    assert len(rows) == 4 and most[0] == 4
    assert sorted(g.index for g in handed if g) == [0, 1, 2, 3]
    handed.clear()
    LocalExecutor(
        tmp_path / "r.yaml", replace(settings, device="cpu"), 4, Bounds(60.0, 2**30), four_gpus
    ).run(jobs, lambda j, r: None)
    assert handed == [None] * 4


class _Recorder:
    """A backend that records the job it is handed and runs nothing."""

    name = "recorder"
    image_id = None

    def __init__(self) -> None:
        self.jobs: list[Job] = []

    def run(self, job: Job) -> Outcome:
        self.jobs.append(job)
        return Outcome(returncode=1, timed_out=False, seconds=0.0, stdout_tail="", stderr_tail="")

    def enforced(self, job: Job) -> dict[str, str]:
        return {}


def test_the_job_names_its_gpu_to_cuda(four_gpus: list[Gpu], tmp_path: Path) -> None:
    backend, rubric = _Recorder(), load_rubric(find_rubric("cifar10-cnn"))
    entry = TaskEntry("cnn", "model.py:Net", "weights/model.pt", rubric.preprocess)
    settings = Settings(device="cuda", gpu=four_gpus[1])
    run_task(backend, entry, tmp_path, rubric, settings, tmp_path / "work")
    (job,) = backend.jobs
    assert job.gpu == four_gpus[1] and job.env["CUDA_VISIBLE_DEVICES"] == four_gpus[1].uuid
    run_task(backend, entry, tmp_path, rubric, replace(settings, device="cpu"), tmp_path / "work-cpu")
    assert backend.jobs[1].gpu is None and "CUDA_VISIBLE_DEVICES" not in backend.jobs[1].env


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "ray"])
def test_run_all_jobs_4_on_4_gpus_hands_each_student_its_own(
    executor: str, student: Path, small_cifar: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole batch, on a machine whose driver lists four GPUs and that has none: each
    grading's results.json names the GPU its jobs were handed (the jobs themselves find no CUDA).
    For Ray, a cluster started here declares the four GPUs and assigns them as a real one would."""
    klass = tmp_path / "class"
    for n in range(4):
        shutil.copytree(student, klass / f"B00000000{n}")
        manifest = klass / f"B00000000{n}" / "submission.yaml"
        manifest.write_text(manifest.read_text().replace("B000000001", f"B00000000{n}"))
    monkeypatch.setenv("GRADER_GPU_INFO_DIR", str(driver_folder(tmp_path / "gpus")))
    monkeypatch.delenv("GRADER_DATA_DIR", raising=False)
    out = tmp_path / "out"
    argv = [
        GRADER, "run-all", str(klass), "--rubric", "cifar10-cnn", "--out", str(out),
        "--data-dir", str(small_cifar), "--sandbox", "bwrap", "--device", "cuda", "--jobs", "4",
        "--executor", executor, "--timeout", "60",
    ]  # fmt: skip
    with contextlib.ExitStack() as stack:
        if executor == "ray":
            import ray

            context = ray.init(num_cpus=4, num_gpus=4, include_dashboard=False)
            stack.callback(ray.shutdown)
            argv += ["--ray-address", context.address_info["address"]]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert done.returncode in (0, 1), done.stderr
    handed = [json.loads((out / f"B00000000{n}" / "results.json").read_text())["gpu"] for n in range(4)]
    assert sorted(handed) == sorted(g.describe() for g in gpus.visible(tmp_path / "gpus")), handed
