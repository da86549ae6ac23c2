"""Reads through a folder of the submission that is a link to the grader's data folder."""

from pathlib import Path

from common import TinyCNN as Net

raise RuntimeError((Path(__file__).parent / "loot" / "canary.txt").read_text())

__all__ = ["Net"]
