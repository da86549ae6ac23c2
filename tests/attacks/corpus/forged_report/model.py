"""Writes the harness's files itself at import: a report claiming 1 parameter, confident logits."""

import json

import numpy as np
from common import TinyCNN as Net

with open("/out/report.json", "w") as f:
    json.dump(
        {
            "stages_done": ["start", "import", "build", "forward", "macs", "weights", "inference"],
            "params": 1,
            "trainable_params": 1,
            "macs": {"thop": 1, "ptflops": 1},
            "forward_ok": True,
            "weights_loaded": True,
            "test_accuracy": 100.0,
        },
        f,
    )
np.save("/out/logits.npy", np.eye(10, dtype=np.float32)[np.zeros(200, dtype=int)])

__all__ = ["Net"]
