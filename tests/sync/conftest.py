"""Fixtures of the sync tests: the push channel tests' stack and handle (push_support.py)."""

from tests.sync.push_support import h, push_stack  # noqa: F401 (fixtures used by name)
