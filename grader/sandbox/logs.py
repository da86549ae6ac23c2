"""A job's stdout or stderr, kept within a byte budget however much the job prints.

A job may print without end; it is never stopped for that. The first and the last
bytes are kept (where a traceback usually is), the middle is counted and dropped, so
neither the disk nor the grader's memory grows with what the job prints. Under
bubblewrap the bytes come from a pipe; under Docker, from the container's attached
output stream.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import IO

_CHUNK = 65_536


Lines = Callable[[bytes], None]
_LINE_CAP = 4096  # of a line handed to ``lines``: progress lines are a hundred bytes


class CappedBuffer:
    """Keeps the first and last ``keep // 2`` bytes of what it is given; counts the rest.

    With ``lines``, every complete line starting with ``mark`` is also handed to it (without the
    mark), as it arrives: the job's progress, read while it runs.
    """

    def __init__(self, keep: int, lines: Lines | None = None, mark: bytes = b"") -> None:
        self._lines, self._mark, self._partial = lines, mark, b""
        self.head = bytearray()
        self.tail: deque[bytes] = deque()
        self.total = 0
        self._head_cap = keep // 2
        self._tail_cap = keep - self._head_cap
        self._tail_size = 0
        self._lock = threading.Lock()  # a reader thread may still add while finish() reads

    def take(self, chunk: bytes) -> None:
        if self._lines is not None:
            self._scan(chunk)
        with self._lock:
            self.total += len(chunk)
            room = self._head_cap - len(self.head)
            if room > 0:
                self.head += chunk[:room]
                chunk = chunk[room:]
            if chunk:
                self.tail.append(chunk)
                self._tail_size += len(chunk)
            # Whole chunks leave the tail once the rest still fills it: no copying per read.
            while self.tail and self._tail_size - len(self.tail[0]) >= self._tail_cap:
                self._tail_size -= len(self.tail.popleft())

    def _scan(self, chunk: bytes) -> None:
        assert self._lines is not None
        *complete, rest = (self._partial + chunk).split(b"\n")
        self._partial = rest[-_LINE_CAP:]
        for line in complete:
            if line.startswith(self._mark):
                self._lines(line[len(self._mark) : len(self._mark) + _LINE_CAP])

    def kept(self) -> bytes:
        """What was kept, with a marker where bytes were dropped."""
        with self._lock:
            head, tail, dropped = bytes(self.head), b"".join(self.tail)[-self._tail_cap :], self.dropped
        marker = f"\n[... {dropped:,} bytes of output not kept ...]\n".encode() if dropped else b""
        return head + marker + tail

    @property
    def dropped(self) -> int:
        return max(0, self.total - len(self.head) - min(self._tail_size, self._tail_cap))


def pipe_chunks(pipe: IO[bytes]) -> Iterator[bytes]:
    """What a process writes to ``pipe``, read as it comes, until the pipe closes."""
    with pipe:
        while chunk := os.read(pipe.fileno(), _CHUNK):
            yield chunk


class CappedStream(CappedBuffer):
    """Reads ``pipe`` to its end in a thread, keeping at most ``keep`` bytes."""

    def __init__(self, pipe: IO[bytes], keep: int, lines: Lines | None = None, mark: bytes = b"") -> None:
        super().__init__(keep, lines, mark)
        self._thread = threading.Thread(target=self._drain, args=(pipe_chunks(pipe),), daemon=True)
        self._thread.start()

    def _drain(self, chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            self.take(chunk)

    def finish(self, timeout_s: float = 5.0) -> bytes:
        """What was kept. A writer that outlived the job (only possible without a PID
        namespace or cgroup) would hold the pipe open: the reader is then left behind,
        still bounded, after ``timeout_s``."""
        self._thread.join(timeout_s)
        return self.kept()
