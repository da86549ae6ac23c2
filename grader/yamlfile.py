"""YAML that people write (manifests, rubrics, overrides), read with bounds.

A student controls ``submission.yaml``, so it is read as plain data with a cap on its size
and on how deeply it nests, and without anchors and aliases: an alias repeats a node by
reference, so a one-kilobyte file of nested aliases expands to gigabytes once anything walks
it (validation, an error message quoting it). Nothing a course or a student writes needs them.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.events import AliasEvent, CollectionStartEvent

MAX_BYTES = 256 * 2**10
MAX_DEPTH = 32


class YamlError(ValueError):
    """The text is not YAML this reader accepts; the message says where and why."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases and anchors and nesting deeper than MAX_DEPTH."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, AliasEvent) or getattr(event, "anchor", None) is not None:
            raise ComposerError(
                None, None, "anchors and aliases (&name, *name) are not accepted; write the value out",
                event.start_mark,
            )  # fmt: skip
        nested = isinstance(event, CollectionStartEvent)
        if nested:
            self._depth += 1
            if self._depth > MAX_DEPTH:
                raise ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            if nested:
                self._depth -= 1


# ``6e8`` and ``1.5e6`` are numbers, as people mean them (a MAC limit, a learning rate): YAML 1.1
# wants a dot and a signed exponent (``6.0e+8``) and would read them as strings.
_BoundedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load(text: str, max_bytes: int = MAX_BYTES) -> Any:
    """The YAML document in ``text`` as plain data; ``YamlError`` says what is wrong and where."""
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        raise YamlError(f"{size:,} bytes, over the {max_bytes:,}-byte limit")
    try:
        return yaml.load(text, Loader=_BoundedLoader)
    except yaml.YAMLError as err:
        raise YamlError(_where(err)) from None


def _where(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or "syntax error"
    return f"line {mark.line + 1}: {problem}" if mark else str(problem)
