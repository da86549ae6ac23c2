"""The machine's NVIDIA GPUs as the driver lists them, and one GPU per job.

The driver describes each GPU in ``/proc/driver/nvidia/gpus/<PCI bus id>/information`` (its
model, UUID and device minor, i.e. ``/dev/nvidia<minor>``). Listed in PCI bus order, a GPU's
place is its index as nvidia-smi, NVML and Ray count it. A job is handed one GPU: the Docker
backend requests it by UUID, bubblewrap binds only its device node (and the driver's control
nodes), and ``CUDA_VISIBLE_DEVICES`` names its UUID, so the job sees it as ``cuda:0`` and no
other GPU's memory.

``$GRADER_GPU_INFO_DIR`` replaces the driver's folder: a folder of such entries describes a
machine's GPUs where there are none (the tests of the assignment use it).
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

DRIVER_GPUS = Path("/proc/driver/nvidia/gpus")
# The driver's nodes every CUDA process opens besides its GPU's own (those present are bound).
CONTROL_DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset")


@dataclass(frozen=True)
class Gpu:
    index: int  # place in PCI bus order: nvidia-smi's, NVML's and Ray's index
    uuid: str  # "GPU-…"
    minor: int  # its device node is /dev/nvidia<minor>
    model: str = "NVIDIA GPU"

    @property
    def device(self) -> str:
        return f"/dev/nvidia{self.minor}"

    def describe(self) -> str:
        return f"GPU {self.index}: {self.model} ({self.uuid})"


def visible(folder: Path | None = None) -> list[Gpu]:
    """The GPUs the driver lists, in PCI bus order; none where there is no NVIDIA driver."""
    root = folder or Path(os.environ.get("GRADER_GPU_INFO_DIR") or DRIVER_GPUS)
    try:
        entries = sorted(p for p in root.iterdir() if (p / "information").is_file())
    except OSError:
        return []
    found = []
    for index, entry in enumerate(entries):
        fields = _fields((entry / "information").read_text(errors="replace"))
        try:
            found.append(Gpu(index, fields["GPU UUID"], int(fields["Device Minor"]), fields.get("Model", "")))
        except (KeyError, ValueError):
            continue  # an entry this driver version writes differently: that GPU is not handed out
    return found


def _fields(text: str) -> dict[str, str]:
    """``Key:   value`` lines, as the driver writes them."""
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


class GpuPool:
    """Hands out GPUs to concurrent jobs: the least busy one each time (lowest index first), so
    ``--jobs N`` on N GPUs gives every job a GPU of its own."""

    def __init__(self, gpus: list[Gpu]) -> None:
        self._gpus = list(gpus)
        self._busy: Counter[int] = Counter()
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._gpus)

    def take(self) -> Gpu | None:
        with self._lock:
            if not self._gpus:
                return None
            gpu = min(self._gpus, key=lambda g: (self._busy[g.index], g.index))
            self._busy[gpu.index] += 1
            return gpu

    def give_back(self, gpu: Gpu | None) -> None:
        if gpu is not None:
            with self._lock:
                self._busy[gpu.index] -= 1
