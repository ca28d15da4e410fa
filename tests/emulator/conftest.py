"""Fixtures of the emulator's tests: the served emulator (tests/support/emulator.py) and, for
the Calendar v3 tests, a caller, the store, and a push receiver (calendar_support.py)."""

from tests.emulator.calendar_support import (  # noqa: F401 (fixtures used by name)
    alice_cal,
    api,
    push,
    receiver,
    store,
)
from tests.support.emulator import (  # noqa: F401 (fixtures used by name)
    emulator,
    emulator_state,
    emulator_time_source,
    http,
    token_for,
)
