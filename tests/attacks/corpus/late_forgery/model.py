"""A daemon (double fork, new session) that keeps rewriting the report after the harness's.

It claims 1 parameter in a report of the valid form, so a forgery that survived would
raise the score of a parameter-limit item.
"""

import os
import sys

from common import TinyCNN as Net

FORGER = """
import json, os, time
report = json.dumps({"stages_done": ["start", "import", "build", "forward", "macs", "weights", "inference"],
                     "params": 1, "trainable_params": 1, "forward_ok": True, "weights_loaded": True})
while True:
    try:
        with open("/out/report.json.forged", "w") as f:
            f.write(report)
        os.replace("/out/report.json.forged", "/out/report.json")
    except OSError:
        pass
    time.sleep(0.002)
"""

if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", FORGER, "late-forgery-9d2e"])
    os._exit(0)

__all__ = ["Net"]
