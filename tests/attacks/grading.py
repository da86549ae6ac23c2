"""Grading the attack corpus with one sandbox backend, with the host watched around it.

Two students: ``B000000666`` hands in every attack (one task each, tests/attacks/corpus)
plus an honest task; ``B000000002`` hands in only the honest task. Both hand in the zoo's
TinyCNN as ``common.py``, which the attacks build on. Before grading the
fixture places canaries (an environment variable of the grader, a file next to the
data, an earlier results file), starts a listener and a bystander process and takes a
snapshot of every host file a job might touch. ``run_task`` is wrapped to keep each
job's logs and output files before the pipeline deletes them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import py_compile
import shutil
import socket
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

import grader.measure
from grader import data as datasets
from grader.config import Settings
from grader.pipeline import Graded, grade
from grader.report.results_json import write_results_json
from grader.rubric import Rubric
from tests.attacks import weights
from tests.conftest import FILES, load_module

HERE = Path(__file__).parent
HONEST_NETWORK = FILES / "zoo" / "nets.py"  # TinyCNN, handed in as common.py; attacks import it
ATTACKER, OTHER = "B000000666", "B000000002"
CANARY_ENV = ("GRADER_ATTACK_CANARY", "env-canary-0f9a3c")
CANARY_FILE_TEXT = "file-canary-77d1e4"
MARKERS = ("late-forgery-9d2e", "ignores-sigterm-41b7")  # in the argv of processes jobs start
TIMEOUT_S = 40.0
_READ_CAP = 16 * 2**20  # of one job's outputs: its report is a few kB, its logits 8 kB
MEMORY_BYTES = 2**30


@dataclass
class JobRecord:
    """What one sandbox job left behind, kept before the pipeline deletes its folder."""

    outcome: Any
    logs: bytes  # stdout.log + stderr.log as kept
    outputs: dict[str, bytes]  # output folder: relative path -> first bytes (links: their target)
    output_bytes: int  # the size of every regular file in the output folder, in all


@dataclass
class Corpus:
    backend: str
    attacker: Graded
    other: Graded
    jobs: dict[tuple[str, str], JobRecord]  # (student, task) -> record
    results_json: str  # both students' results.json, as written
    before: dict[str, str]
    after: dict[str, str]
    accepted: list[bool]  # connections the listener accepted
    bystander_alive: bool
    leftover_processes: list[str] = field(default_factory=list)
    host_peak_bytes: int = 0  # this process's peak resident memory once both were graded

    def task(self, task_id: str):
        return self.attacker.result.tasks[task_id]


def grade_corpus(backend: str, small_cifar: Path, tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    """Set the scene, grade both students with ``backend``, and record what happened."""
    root = tmp_path_factory.mktemp(f"attacks-{backend}")
    data = root / "data"
    data.mkdir()
    shutil.copy(small_cifar, data / small_cifar.name)
    (data / "canary.txt").write_text(CANARY_FILE_TEXT)
    settings = Settings(
        data_dir=data / small_cifar.name,
        cache_dir=root / "cache",
        out_dir=root / "reports",
        sandbox=backend,
        task_timeout_s=TIMEOUT_S,
        memory_bytes=MEMORY_BYTES,
        cpus=1.0,  # two jobs at a time on a 2-core machine
    )
    split = datasets.load_split(datasets.resolve_source(settings.data_dir), "test", settings.cache_dir)
    other = _honest_student(root / "submissions" / OTHER)
    previous = settings.out_dir / OTHER / "results.json"
    previous.parent.mkdir(parents=True)
    previous.write_text(f'{{"student_id": "{OTHER}", "note": "{CANARY_FILE_TEXT}"}}')
    with _listener() as (port, accepted), _bystander() as bystander, pytest.MonkeyPatch.context() as mp:
        targets = {
            "LABELS": str(split.labels_path),
            "CANARY_FILE": str(data / "canary.txt"),
            "OTHER_SUBMISSION": str(other / "common.py"),
            "PREVIOUS_RESULTS": str(previous),
            "LISTENER_PORT": port,
            "BYSTANDER_PID": bystander.pid,
        }
        attacker = _attacker(root / "submissions" / ATTACKER, targets, data, split)
        watched = [data, settings.cache_dir, other, attacker, settings.out_dir]
        before = _snapshot(watched)
        mp.setenv(*CANARY_ENV)
        jobs = _record_jobs(mp)
        graded_attacker, graded_other = _grade_in_parallel(attacker, other, settings)
        after = _snapshot(watched)
        alive = bystander.poll() is None
    results = []
    for graded in (graded_attacker, graded_other):
        path = root / "results" / graded.result.student_id / "results.json"
        write_results_json(graded.result, path)
        results.append(path.read_text())
    return Corpus(
        backend,
        graded_attacker,
        graded_other,
        jobs,
        "\n".join(results),
        before,
        after,
        accepted,
        alive,
        _processes_with(MARKERS),
        _peak_resident_bytes(),
    )


def _plant_bytecode(source: Path, code: str) -> None:
    """Bytecode of ``code`` where Python looks for ``source``'s cache, marked unchecked-hash:
    an import that trusts caches runs it whatever ``source`` says."""
    cache = Path(importlib.util.cache_from_source(str(source)))
    cache.parent.mkdir(exist_ok=True)
    planted = cache.parent / f"_{source.stem}_planted.py"
    planted.write_text(code)
    py_compile.compile(
        str(planted),
        cfile=str(cache),
        doraise=True,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    planted.unlink()


def _memorise(path: Path, split: datasets.CachedSplit) -> None:
    """hash of each test image's (C, H, W) pixels -> its label: what a memorising model ships."""
    images, labels = split.images(), split.labels()
    table = {
        hashlib.sha256(image.transpose(2, 0, 1).copy().tobytes()).hexdigest(): int(label)
        for image, label in zip(images, labels, strict=True)
    }
    path.write_text(json.dumps(table))


def _honest_student(folder: Path) -> Path:
    import torch

    folder.mkdir(parents=True)
    shutil.copy(HONEST_NETWORK, folder / "common.py")
    torch.manual_seed(0)
    torch.save(load_module(folder / "common.py").TinyCNN().state_dict(), folder / "weights.pt")
    (folder / "submission.yaml").write_text(f"student_id: {OTHER}\nassignment: attacks\n")
    return folder


def _attacker(folder: Path, targets: dict[str, Any], data: Path, split: datasets.CachedSplit) -> Path:
    """Every attack folder, the honest weights, the hostile weights, links, planted bytecode,
    the memorised test set and the manifest."""
    import torch

    shutil.copytree(HERE / "corpus", folder)
    _memorise(folder / "memorised" / "table.json", split)
    shutil.copy(HONEST_NETWORK, folder / "common.py")
    (folder / "targets.py").write_text("".join(f"{k} = {v!r}\n" for k, v in targets.items()))
    torch.manual_seed(0)
    model = load_module(folder / "common.py").TinyCNN()
    torch.save(model.state_dict(), folder / "weights.pt")
    weights.build(folder, model.state_dict(), model)
    (folder / "symlink_weights" / "weights.pt").symlink_to("/etc/shadow")
    (folder / "symlink_model").mkdir()
    (folder / "symlink_model" / "model.py").symlink_to(targets["CANARY_FILE"])
    (folder / "symlink_dir" / "loot").symlink_to(data, target_is_directory=True)
    manifest = {
        "student_id": ATTACKER,
        "assignment": "attacks",
        "tasks": {"manifest_traversal": {"model": "../../../escape.py:Net"}},
    }
    (folder / "submission.yaml").write_text(yaml.safe_dump(manifest))
    # Last, so that nothing this process imports from the folder meets the planted bytecode.
    _plant_bytecode(folder / "common.py", "raise RuntimeError('bytecode ran instead of common.py')")
    _plant_bytecode(
        folder / "bytecode" / "model.py", "raise RuntimeError('bytecode ran instead of model.py')"
    )
    return folder


def _record_jobs(mp: pytest.MonkeyPatch) -> dict[tuple[str, str], JobRecord]:
    """Wrap the run_task of grader.measure (the real one runs) to keep what each job left."""
    jobs: dict[tuple[str, str], JobRecord] = {}
    real = grader.measure.run_task

    def recording(backend, entry, submission_root, rubric, settings, work_dir, **kinds):
        run, enforced = real(backend, entry, submission_root, rubric, settings, work_dir, **kinds)
        logs = b"".join(p.read_bytes() for p in sorted((work_dir / "logs").glob("*.log")))
        outputs, size = _files(work_dir / "out")
        jobs[(submission_root.name, entry.id)] = JobRecord(run.outcome, logs, outputs, size)
        return run, enforced

    mp.setattr(grader.measure, "run_task", recording)
    return jobs


def _files(folder: Path) -> tuple[dict[str, bytes], int]:
    """Up to _READ_CAP bytes of the folder's files (a backend without an output cap may
    leave gigabytes in thousands of files), and the size of all of them."""
    found, size, budget = {}, 0, _READ_CAP
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_symlink():
            found[name] = b"link:" + os.readlink(path).encode()
        elif path.is_file():
            size += path.stat().st_size
            with open(path, "rb") as f:
                found[name] = f.read(budget)
            budget -= len(found[name])
    return found, size


def _grade_in_parallel(attacker: Path, other: Path, settings: Settings) -> tuple[Graded, Graded]:
    """The attacker's tasks in two halves and the other student, two sandboxes at a time."""
    spec = yaml.safe_load((HERE / "attacks.yaml").read_text())
    halves = [_rubric_of(spec, list(spec["tasks"])[i::2]) for i in (0, 1)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        parts = [pool.submit(grade, attacker, half, settings) for half in halves]
        honest = pool.submit(grade, other, _rubric_of(spec, ["honest"]), settings)
        first, second = parts[0].result(), parts[1].result()
    first.result.tasks.update(second.result.tasks)
    first.result.items += second.result.items
    first.result.warnings += [w for w in second.result.warnings if w not in first.result.warnings]
    return first, honest.result()


def _rubric_of(spec: dict[str, Any], task_ids: list[str]) -> Rubric:
    part = dict(spec)
    part["tasks"] = {k: v for k, v in spec["tasks"].items() if k in task_ids}
    part["items"] = [item for item in spec["items"] if item["task"] in task_ids]
    return Rubric.model_validate(part)


def _snapshot(folders: list[Path]) -> dict[str, str]:
    """Path -> size, mtime and content hash (links: their target) of everything below; sysctls."""
    seen = {p: Path(p).read_text() for p in ("/proc/sys/kernel/core_pattern", "/proc/sys/vm/swappiness")}
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(folder):
            for name in sorted(dirnames + filenames):
                path = Path(dirpath) / name
                info = path.lstat()
                if path.is_symlink():
                    seen[str(path)] = "link:" + os.readlink(path)
                elif path.is_file():
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()
                    seen[str(path)] = f"{info.st_size} {info.st_mtime_ns} {digest}"
    return seen


class _listener:
    """A TCP server on the host's loopback; no job may reach it."""

    def __enter__(self) -> tuple[int, list[bool]]:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen()
        self.accepted: list[bool] = []
        threading.Thread(target=self._accept, daemon=True).start()
        return self.server.getsockname()[1], self.accepted

    def _accept(self) -> None:
        try:
            while True:
                connection, _ = self.server.accept()
                self.accepted.append(True)
                connection.close()
        except OSError:
            return

    def __exit__(self, *exc: object) -> None:
        self.server.close()


class _bystander:
    """A process of the host, same uid as the jobs' outside uid, that must survive them."""

    def __enter__(self) -> subprocess.Popen[bytes]:
        self.proc = subprocess.Popen(["sleep", "3600"])
        return self.proc

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()


def _peak_resident_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _processes_with(markers: tuple[str, ...]) -> list[str]:
    found = []
    for marker in markers:
        lines = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True).stdout
        found += [line for line in lines.splitlines() if "pgrep" not in line]
    return found
