"""Phones home at import: a TCP connection to a server on the grader's machine."""

import socket

import targets
from common import TinyCNN as Net

socket.create_connection(("127.0.0.1", targets.LISTENER_PORT), timeout=5).close()

__all__ = ["Net"]
