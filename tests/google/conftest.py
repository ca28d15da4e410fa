"""The Calendar client's tests run against the emulator fixtures of tests/emulator."""

from tests.emulator.conftest import (  # noqa: F401 (fixtures used by name)
    emulator,
    emulator_state,
    emulator_time_source,
    http,
)
