"""The emulator's aiohttp application factory.

Each part of the emulator is a module with `setup(app, state)` that adds its routes:
`emulator.oauth` (authorization, token, revoke, userinfo), `emulator.calendar_api`
(Calendar v3 under `/calendar/v3/`), `emulator.control` (faults, inspection, seeding under
`/_emulator/`). The shared `EmulatorState` is `app[STATE_KEY]`.
"""

from __future__ import annotations

from aiohttp import web

from emulator.state import EmulatorState

STATE_KEY = web.AppKey("emulator_state", EmulatorState)


def create_emulator_app(state: EmulatorState | None = None) -> web.Application:
    """Build the emulator. Pass a `state` to control clock, token lifetime and seed data."""
    state = state or EmulatorState()
    app = web.Application()
    app[STATE_KEY] = state
    # Imported here so each part stays an independent module with its own setup().
    from emulator import calendar_api, control, oauth

    for part in (control, oauth, calendar_api):
        part.setup(app, state)
    return app
