"""The Calendar client's tests run against the served emulator (tests/support/emulator.py)."""

from tests.support.emulator import (  # noqa: F401 (fixtures used by name)
    emulator,
    emulator_state,
    emulator_time_source,
    http,
)
