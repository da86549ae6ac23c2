"""The job's writable output directory, capped in size by a tmpfs of its own.

RLIMIT_FSIZE caps each file; only a filesystem of its own caps the whole directory
(and its number of files). The backend mounts a tmpfs of ``Limits.output_bytes`` on a
private staging folder, binds that into the sandbox instead of the host directory and,
once every process of the job is dead, copies the regular files back into the host
directory, where the grader reads them as before. Links, devices and pipes the job
left there are not copied. Without the right to mount (not root), the host directory is
bound directly and the cap is reported as not in force.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from grader.files import open_untrusted
from grader.sandbox.base import Mount

_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 2, 4, 8
_MNT_DETACH = 2
_MAX_FILES = 4096  # inodes of the tmpfs, and entries copied back: the harness writes three files
_MAX_DEPTH = 8


@contextmanager
def capped(mount: Mount, cap_bytes: int) -> Iterator[tuple[Mount, str]]:
    """``mount`` backed by a tmpfs of ``cap_bytes``, and how the cap is (not) in force."""
    refusal = _refusal(mount)
    staging = Path(tempfile.mkdtemp(prefix=f"grader-{os.getpid()}-out-"))
    if refusal is None:
        refusal = _mount_tmpfs(staging, cap_bytes)
    if refusal is not None:
        staging.rmdir()
        yield mount, f"NOT enforced: {refusal}; each file ≤ the largest-file limit"
        return
    try:
        yield replace(mount, host=staging), f"{cap_bytes / 2**20:.0f} MiB (tmpfs)"
        copy_regular_files(staging, mount.host, cap_bytes)
    finally:
        _libc().umount2(os.fsencode(staging), _MNT_DETACH)
        shutil.rmtree(staging, ignore_errors=True)


def _refusal(mount: Mount) -> str | None:
    if not mount.host.is_dir():
        return f"{mount.host} is not a directory"
    if any(mount.host.iterdir()):
        return f"{mount.host} is not empty"
    return None


def _mount_tmpfs(path: Path, cap_bytes: int) -> str | None:
    """Mount a tmpfs on ``path``; None on success, else why not."""
    options = f"size={cap_bytes},nr_inodes={_MAX_FILES},mode=0700"
    flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    if _libc().mount(b"tmpfs", os.fsencode(path), b"tmpfs", flags, options.encode()) == 0:
        return None
    return f"cannot mount a tmpfs ({os.strerror(ctypes.get_errno())})"


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def copy_regular_files(source: Path, target: Path, budget_bytes: int) -> None:
    """Folders and regular files from ``source`` into ``target``, links never followed.

    At most ``budget_bytes`` in all: hard links to one file, or sparse files, take little
    room on a tmpfs but would be written out in full on the host. Deep folders are cut
    at ``_MAX_DEPTH``, and the entries copied at ``_MAX_FILES``.
    """
    stack, entries = [(source, target, 0)], 0
    while stack:
        src_dir, dst_dir, depth = stack.pop()
        for entry in sorted(os.scandir(src_dir), key=lambda e: e.name):
            entries += 1
            if entries > _MAX_FILES:
                return
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode) and depth < _MAX_DEPTH:
                (dst_dir / entry.name).mkdir(exist_ok=True)
                stack.append((Path(entry.path), dst_dir / entry.name, depth + 1))
            elif stat.S_ISREG(info.st_mode) and info.st_size <= budget_bytes:
                budget_bytes -= info.st_size
                _copy_file(Path(entry.path), dst_dir / entry.name, info.st_size)


def _copy_file(source: Path, target: Path, size: int) -> None:
    with open_untrusted(source, size) as src, open(target, "wb") as dst:
        dst.write(src.read(size))  # no more than was counted, should the file have grown
