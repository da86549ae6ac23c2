"""Wall time of `grader ci --profile quick` on the small sample CNN (prints figures; not a test).

    .venv/bin/python benchmarks/ci_quick.py [--data-dir PATH] [--sandbox bwrap] [--repeat 2]

Builds the 5,370-parameter sample of tests/files/submissions/B000000001 with seeded
weights in a temporary git checkout, then runs the command a CI job runs, as a
subprocess, with a fresh dataset cache: the first run decodes CIFAR-10's test split
(what a CI job without a warm cache pays), later runs read the cache. Target on a
2-core CPU: under 60 s per run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from grader.config import REPO_ROOT

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
SAMPLE = REPO_ROOT / "tests" / "files" / "submissions" / "B000000001"
GRADER = str(Path(sys.executable).parent / "grader")


def make_submission(root: Path) -> Path:
    repo = root / "B000000001"
    shutil.copytree(SAMPLE, repo)
    namespace: dict[str, object] = {}
    exec((repo / "model.py").read_text(), namespace)  # the course's own sample, trusted
    torch.manual_seed(0)
    (repo / "weights").mkdir()
    torch.save(namespace["Net"]().state_dict(), repo / "weights" / "model.pt")  # type: ignore[operator]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    return repo


def run_once(repo: Path, out: Path, data: Path, sandbox: str, env: dict[str, str]) -> float:
    args = ["ci", str(repo), "--rubric", "cifar10-cnn", "--profile", "quick", "--out", str(out)]
    started = time.perf_counter()
    done = subprocess.run(
        [GRADER, *args, "--data-dir", str(data), "--sandbox", sandbox],
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"grader ci exited {done.returncode}:\n{done.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--sandbox", default="bwrap")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    with tempfile.TemporaryDirectory(prefix="grader-ci-bench-") as tmp:
        root = Path(tmp)
        env = dict(os.environ, GRADER_CACHE_DIR=str(root / "cache"))
        repo = make_submission(root)
        for run in range(args.repeat):
            seconds = run_once(repo, root / f"out{run}", args.data_dir, args.sandbox, env)
            cache = "cold cache: decodes the test split" if run == 0 else "warm cache"
            print(f"run {run + 1} ({cache}): {seconds:6.1f} s (target < 60 s)")
        record = json.loads((root / "out0" / "grader-results.json").read_text())
        evaluation = record["tasks"]["cnn"]["evaluation"]
        score = f"{record['total']:g}/{record['max_total']:g}"
        print(f"evaluated {evaluation['n_images']:,} test images; score {score}")


if __name__ == "__main__":
    main()
