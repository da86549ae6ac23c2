"""grader/yamlfile.py: YAML from people, read as plain data with bounds."""

from __future__ import annotations

import resource
import time

import pytest

from grader.yamlfile import MAX_DEPTH, YamlError, load

# Nine lists of nine references each: about 387 million strings once expanded.
ALIAS_BOMB = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + "".join(
    f"{b}: &{b} [{', '.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)


def test_an_alias_bomb_is_refused_at_its_first_anchor_without_expanding() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    with pytest.raises(YamlError, match=r"line 1: anchors and aliases \(&name, \*name\) are not accepted"):
        load(ALIAS_BOMB)
    assert time.monotonic() - started < 1
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB


@pytest.mark.parametrize("text", ["x: *nowhere\n", "a: &a 1\n", "- &x [1]\n- *x\n"])
def test_any_anchor_or_alias_is_refused(text: str) -> None:
    with pytest.raises(YamlError, match="anchors and aliases"):
        load(text)


def test_depth_and_size_are_bounded() -> None:
    deep = "x: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
    with pytest.raises(YamlError, match=f"nested more than {MAX_DEPTH} levels deep"):
        load(deep)
    nested: list = []
    for _ in range(MAX_DEPTH - 2):
        nested = [nested]
    assert load("x: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)) == {"x": nested}
    with pytest.raises(YamlError, match="over the 100-byte limit"):
        load("a: " + "b" * 200, max_bytes=100)


def test_plain_data_and_numbers_as_people_write_them() -> None:
    assert load("max_macs: 6e8\nlr: 1.5e-3\nn: 10\nname: '6e8'\nok: true\n") == {
        "max_macs": 6e8, "lr": 1.5e-3, "n": 10, "name": "6e8", "ok": True,
    }  # fmt: skip


def test_python_objects_are_not_constructed() -> None:
    with pytest.raises(YamlError, match="could not determine a constructor"):
        load("x: !!python/object/apply:os.system ['true']\n")
