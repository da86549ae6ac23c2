"""grader/files.py: the atomic writer and the one way to open a file someone else controls."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import threading
from pathlib import Path

import pytest

from grader.files import UntrustedFileError, open_untrusted, read_untrusted, sha256, write_atomic


def test_an_atomic_write_replaces_the_file_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "results.json"
    write_atomic(target, b"old")

    def fail(handle: object) -> None:
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_atomic(target, fail)
    assert target.read_bytes() == b"old" and os.listdir(target.parent) == ["results.json"]
    write_atomic(target, lambda handle: handle.write(b"new"))
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_regular_file_is_read_and_hashed(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    path.write_bytes(b"x" * 3_000_000)
    assert read_untrusted(path, 3_000_000) == b"x" * 3_000_000
    with open_untrusted(path) as handle:
        assert sha256(handle) == hashlib.sha256(b"x" * 3_000_000).hexdigest()
    with pytest.raises(UntrustedFileError, match="3,000,000 bytes, over the 100-byte limit"):
        read_untrusted(path, 100)


def test_nothing_there_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_untrusted(tmp_path / "nothing", 10)


def test_links_fifos_devices_sockets_and_folders_are_refused_without_blocking(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to("/etc/passwd")
    os.mkfifo(tmp_path / "fifo")  # nobody writes it: a blocking open would hang here
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "sock"))
    expected = {
        tmp_path / "link": "is a symbolic link, not a regular file",
        tmp_path / "fifo": "is a FIFO (named pipe), not a regular file",
        Path("/dev/null"): "is a character device, not a regular file",
        tmp_path: "is a folder, not a regular file",
        tmp_path / "sock": "is a socket, not a regular file",
    }
    done = threading.Event()

    def read_all() -> None:
        for path, words in expected.items():
            with pytest.raises(UntrustedFileError, match=re.escape(words)):
                read_untrusted(path, 10)
        done.set()

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    reader.join(10)
    server.close()
    assert done.is_set(), "opening a special file blocked"
