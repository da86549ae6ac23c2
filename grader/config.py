"""Settings for one grading run; every default is written here once.

The command line reads its defaults from ``Settings`` so the two never disagree.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from grader.errors import UsageError
from grader.files import write_atomic
from grader.gpus import Gpu
from grader.protocol import Limits

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent


def _shipped(name: str) -> Path:
    """``rubrics/``, ``templates/`` or ``reference_models/``: at the top of a checkout (and of an
    editable install), inside the package as ``grader/_shipped/<name>`` when installed from a
    wheel (pyproject.toml maps them there)."""
    installed = PACKAGE_DIR / "_shipped" / name
    return installed if installed.is_dir() else REPO_ROOT / name


RUBRICS_DIR = _shipped("rubrics")
TEMPLATES_DIR = _shipped("templates")
REFERENCE_DIR = _shipped("reference_models")


def user_config_path() -> Path:
    """The user's own settings file: ``$GRADER_CONFIG``, else ``~/.config/grader/config.toml``."""
    env = os.environ.get("GRADER_CONFIG")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "grader" / "config.toml"


# The keys ``grader config`` reads and sets, and what each means.
USER_KEYS = {"data_dir": "where CIFAR-10 is read from when --data-dir and $GRADER_DATA_DIR are not given"}


def read_user_config() -> dict[str, str]:
    """The user's settings (empty without a file); a broken file is a UsageError naming it."""
    path = user_config_path()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise UsageError(f"{path} cannot be read ({err}); fix it or remove it") from None
    return {key: str(value) for key, value in data.items() if key in USER_KEYS}


def write_user_config(key: str, value: str | None) -> Path:
    """Set ``key`` (None removes it) in the user's settings file; returns the file."""
    if key not in USER_KEYS:
        raise UsageError(f"unknown setting {key!r}: use {', '.join(USER_KEYS)}")
    data = read_user_config()
    if value is None:
        data.pop(key, None)
    else:
        data[key] = value
    text = "".join(f"{k} = {json.dumps(v)}\n" for k, v in sorted(data.items()))  # JSON strings are TOML's
    path = user_config_path()
    write_atomic(path, text.encode("utf-8"))
    return path


def _default_cache_dir() -> Path:
    env = os.environ.get("GRADER_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "grader"


class Device(StrEnum):
    """Where models run: ``auto`` is CUDA when torch sees a GPU, else the CPU."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


@dataclass
class Settings:
    # Where CIFAR-10 is read from; None falls back to $GRADER_DATA_DIR, then the user's config
    # file (grader config data_dir PATH), then torchvision's download (see data.resolve_source).
    data_dir: Path | None = None
    # Reports go to out_dir/<student_id>/.
    out_dir: Path = Path("reports")
    # A Device: "auto" picks CUDA when torch sees a GPU, else the CPU.
    device: str = Device.AUTO
    # The GPU this grading's jobs get, when they run on CUDA: a batch hands each grading its
    # own (grader/gpus.py); None is the first GPU the driver lists.
    gpu: Gpu | None = None
    # Decoded datasets are cached here as .npy files, keyed by the source file.
    cache_dir: Path = field(default_factory=_default_cache_dir)
    # Sandbox backend: "auto" is Docker when a daemon answers and has the image, else
    # bubblewrap; "none" (no isolation) only through the CLI's --unsafe-no-sandbox.
    sandbox: str = "auto"
    # The Docker backend's image (scripts/build_image.sh or `docker build .`) and runtime
    # (None: the daemon's default, runc; "runsc" for gVisor where installed).
    docker_image: str = "grader-harness:latest"
    docker_runtime: str | None = None
    # Wall-clock limit for one task in the sandbox (build, count, load weights, evaluate).
    task_timeout_s: float = 1800.0
    # A model file's module-level code that runs longer than this (a training loop) is stopped,
    # and the model built from the file's definitions only.
    import_budget_s: float = 60.0
    # Leave out every retraining (quick checks); those items are then scored "not_checked",
    # with skip_training_reason in their message.
    skip_training: bool = False
    skip_training_reason: str = (
        "retraining was skipped (--skip-training); grade again without it, or a TA scores this item"
    )
    # Evaluate only the first this-many test images of each class, in test-split order
    # (grader ci's quick profile); None evaluates the whole test split.
    test_subset_per_class: int | None = None
    # Recipe fields forced on every retraining and baseline (e.g. {"epochs": 1} for a quick
    # check on a CPU); applied after the rubric's and the student's choices.
    recipe_overrides: dict[str, Any] = field(default_factory=dict)
    # Retraining is not started when it would take longer than this here, all runs together: a
    # few training steps of each model are timed first. Its items are then left not checked,
    # with the estimate in the report.
    train_budget_s: float = 1800.0
    # Wall-clock limit for one retraining when its recipe sets no budget_s; a recipe's budget
    # plus task_timeout_s otherwise (start-up and the final test evaluation).
    train_timeout_s: float = 3600.0
    # Address-space limit for the sandboxed process; a CUDA torch build maps several GB
    # of virtual memory at import, so this bounds runaway allocations, not the working set.
    address_space_bytes: int = 16 * 2**30
    # Resident memory of one grading process of run-all (the host side: no student code runs
    # in it); the watchdog stops a worker that passes it.
    worker_memory_bytes: int = 3 * 2**29
    # Resident memory of one job (cgroup or container limit, no swap).
    memory_bytes: int = 6 * 2**30
    # Processes and threads of one job: stops fork bombs; torch needs a few dozen threads.
    max_pids: int = 256
    # CPU share of one job, in cores.
    cpus: float = float(os.cpu_count() or 1)
    # A submission folder larger than this, or with more files and folders, is refused unread.
    max_submission_bytes: int = 1 * 2**30
    max_submission_files: int = 10_000
    # Models whose float32 parameters exceed this are counted on the meta device only.
    max_model_bytes: int = 4 * 2**30
    # Largest file a sandboxed job may write (logits of 10,000 × 10 are 400 kB), and the
    # whole output directory.
    max_output_bytes: int = 64 * 2**20
    # Largest checkpoint file a retraining may write (ResNet18 with SGD momentum is ~90 MB).
    max_checkpoint_bytes: int = 2 * 2**30
    # stdout + stderr kept from one job; a flood beyond this is discarded.
    max_log_bytes: int = 1 * 2**20
    # Open files of one job, and the size of its /tmp (and /dev/shm).
    max_open_files: int = 256
    tmpfs_bytes: int = 256 * 2**20
    # The secret probe (grader/probe.py): perturbed copies of this many test images are evaluated
    # with the test set, and an accuracy this many points lower on them than on the originals
    # is flagged as a memorised test set.
    probe_images: int = 1000
    probe_gap_points: float = 15.0
    # A claimed test accuracy (submission.yaml, or printed in a notebook) more than this many
    # points from the measured one is an alert on page 1 and on the console, whether or not
    # the rubric scores the claim.
    claim_gap_points: float = 5.0
    # Images per forward pass during evaluation.
    eval_batch_size: int = 500
    # Misclassified test images shown in the report: the most confident mistakes, a few per
    # true class (grader/evaluate.py picks them).
    misclassified_shown: int = 16

    def limits(self, training: bool = False) -> Limits:
        """The resource caps of one sandbox job; a training job also writes checkpoints."""
        largest_file = max(self.max_output_bytes, self.max_checkpoint_bytes if training else 0)
        return Limits(
            address_space_bytes=self.address_space_bytes,
            file_size_bytes=largest_file,
            memory_bytes=self.memory_bytes,
            pids=self.max_pids,
            cpus=self.cpus,
            output_bytes=self.max_output_bytes,
            log_bytes=self.max_log_bytes,
            open_files=self.max_open_files,
            tmpfs_bytes=self.tmpfs_bytes,
        )
