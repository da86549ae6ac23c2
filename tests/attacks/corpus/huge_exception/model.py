"""Fails at import with a ten-megabyte message."""

raise RuntimeError("x" * 10_000_000)
