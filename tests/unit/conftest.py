from __future__ import annotations

import pytest

from grader.rubric import Rubric, find_rubric, load_rubric


@pytest.fixture(scope="session")
def eai_rubric() -> Rubric:
    return load_rubric(find_rubric("eai-lab2"))
