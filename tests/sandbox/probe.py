"""Runs inside the sandbox for tests/test_sandbox.py: tries what student code must not do.

Prints one JSON object: for each attempt, the error it met, or "allowed".
"""

import json
import os
import socket
import sys


def attempt(fn):
    try:
        fn()
        return "allowed"
    except Exception as exc:
        return type(exc).__name__


def connect():
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2).close()


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(path):
    with open(path, "w") as f:
        f.write("x")


print(
    json.dumps(
        {
            "connect": attempt(connect),
            "dns": attempt(lambda: socket.getaddrinfo("pypi.org", 443)),
            "read_labels": attempt(lambda: read(sys.argv[2])),
            "read_home": attempt(lambda: os.listdir("/root/.ssh")),
            "read_shared": attempt(lambda: os.listdir(sys.argv[3])),
            "write_submission": attempt(lambda: write("/submission/forged.txt")),
            "write_usr": attempt(lambda: write("/usr/evil")),
            "write_out": attempt(lambda: write("/out/ok.txt")),
            "uid": os.getuid(),
            "env": sorted(os.environ),
            "pid1": read("/proc/1/cmdline").split(b"\0")[0].decode(),
        }
    )
)
