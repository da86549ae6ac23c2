"""Starts a helper that ignores SIGTERM and would sleep for an hour, then behaves."""

import subprocess
import sys

from common import TinyCNN as Net

DEAF = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(3600)"
subprocess.Popen([sys.executable, "-c", DEAF, "ignores-sigterm-41b7"])

__all__ = ["Net"]
