"""What the emulator's parts share to add their routes: the app keys, the control prefix, and
the control API's small HTTP helpers.

`emulator.app` builds the application and calls each part's `setup(app, state)`
(`emulator.oauth`, `emulator.calendar_api`, `emulator.control`). The parts need a few names the
application also uses; they live here, below all of them, so no part imports the module that
imports it.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from emulator.state import EmulatorState

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
EndpointNamer = Callable[[web.Request], str | None]

STATE_KEY = web.AppKey("emulator_state", EmulatorState)
# Parts whose routes are catch-alls (Calendar v3 dispatches by discovery) append a namer here so
# faults and the request log see `events.list` rather than a guess from the path. The first
# namer that answers wins.
ENDPOINT_NAMERS_KEY = web.AppKey("emulator_endpoint_namers", list[EndpointNamer])
# The control and inspection API; faults never apply under it.
CONTROL_PREFIX = "/_emulator"


def add_control_route(app: web.Application, method: str, path: str, handler: Handler) -> None:
    """Register `handler` at `/_emulator{path}` (path starts with `/`)."""
    app.router.add_route(method, CONTROL_PREFIX + path, handler)


def bad_request(message: str) -> web.HTTPBadRequest:
    """A 400 with `{"error": message}` for malformed control requests."""
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


def not_found(message: str) -> web.HTTPNotFound:
    return web.HTTPNotFound(text=json.dumps({"error": message}), content_type="application/json")


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body ({} when empty); 400 when it is not an object."""
    if not request.can_read_body:
        return {}
    try:
        data = await request.json()
    except ValueError:
        raise bad_request("body must be JSON") from None
    if not isinstance(data, dict):
        raise bad_request("body must be a JSON object")
    return data
