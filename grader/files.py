"""Files both sides of the sandbox write and read: one atomic writer, one untrusted reader.

Shared by the host and the code inside the sandbox (``grader.inside``), so it imports the
standard library only.

``write_atomic`` writes beside the target and renames, so a reader (or a kill at any moment)
sees either the old file or the whole new one. ``open_untrusted`` is the one way to open a
file someone else controls (a student's submission, a sandbox's output): links are not
followed, only regular files are opened (a FIFO or device would block forever), and
``read_untrusted`` never reads more than its cap.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

Writer = Callable[[BinaryIO], object]


def write_atomic(path: Path, data: bytes | Writer, *, sync: bool = True) -> None:
    """Write ``data`` (bytes, or a function writing to a binary file) to ``path`` atomically.

    The temporary file lives in the same folder because ``os.replace`` is atomic only within
    one file system; on any failure it is removed and ``path`` is left as it was. ``sync``
    flushes it to disk before the rename (leave it on for anything that must survive a crash).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            if isinstance(data, bytes | bytearray | memoryview):
                handle.write(data)
            else:
                data(handle)
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
        # mkstemp makes the file private; outputs are for the course staff to read.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class UntrustedFileError(OSError):
    """The path is missing, a link, not a regular file, or over its size cap."""


@contextlib.contextmanager
def open_untrusted(path: Path, cap: int | None = None, *, dir_fd: int | None = None) -> Iterator[BinaryIO]:
    """A regular file opened for reading without following a link at its last component.

    Raises ``FileNotFoundError`` when nothing is there, and ``UntrustedFileError`` saying why
    for a link, FIFO, device, socket or folder, or a file larger than ``cap`` bytes. Opening
    is non-blocking, so a FIFO never stalls it.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise UntrustedFileError(_why_not(path, err, dir_fd)) from err
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UntrustedFileError(f"{path} is {kind(info.st_mode)}, not a regular file")
        if cap is not None and info.st_size > cap:
            raise UntrustedFileError(f"{path} is {info.st_size:,} bytes, over the {cap:,}-byte limit")
        os.set_blocking(fd, True)
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        yield handle


def read_untrusted(path: Path, cap: int) -> bytes:
    """The bytes of a regular file of at most ``cap`` bytes (see ``open_untrusted``)."""
    with open_untrusted(path, cap) as handle:
        data = handle.read(cap + 1)
    if len(data) > cap:  # it grew after the check
        raise UntrustedFileError(f"{path} is over the {cap:,}-byte limit")
    return data


def sha256(handle: BinaryIO, chunk: int = 2**20) -> str:
    """The SHA-256 of what is left to read in ``handle``, read a chunk at a time."""
    digest = hashlib.sha256()
    while data := handle.read(chunk):
        digest.update(data)
    return digest.hexdigest()


def kind(mode: int) -> str:
    """What a file of ``mode`` is, in words: "a FIFO", "a character device", …"""
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISREG, "a regular file"),
    ):
        if test(mode):
            return name
    return "a special file"


def _why_not(path: Path, err: OSError, dir_fd: int | None) -> str:
    with contextlib.suppress(OSError):
        mode = os.stat(path, dir_fd=dir_fd, follow_symlinks=False).st_mode
        if not stat.S_ISREG(mode):
            return f"{path} is {kind(mode)}, not a regular file"
    return f"{path} cannot be opened ({err.strerror})"
