"""The emulator's aiohttp application factory.

Each part of the emulator is a module with `setup(app, state)` that adds its routes:
`emulator.oauth` (authorization, token, revoke, userinfo), `emulator.calendar_api`
(Calendar v3 under `/calendar/v3/`), `emulator.control` (faults, inspection, seeding under
`/_emulator/`). The shared `EmulatorState` is `app[STATE_KEY]`; the names the parts share with
this module live below them all, in `emulator.routing`.

One middleware wraps every endpoint outside `/_emulator/`: it names the endpoint (the route's
`name=`, e.g. `events.list`, else a best guess from method and path), works out whose request it
is, applies a scripted fault if one matches (an error, a hang, or a call applied and then
answered late or never), turns `GoogleApiError` / `OAuthError` raised by a
handler into Google's bodies, and records the request for inspection.
"""

from __future__ import annotations

import asyncio
import logging
import re

from aiohttp import web
from aiohttp.typedefs import Middleware

from emulator import calendar_api, control, oauth
from emulator.errors import GoogleApiError, OAuthError
from emulator.faults import OAUTH_ENDPOINTS
from emulator.routing import CONTROL_PREFIX, ENDPOINT_NAMERS_KEY, STATE_KEY, Handler
from emulator.state import EmulatorState, UnknownUser

log = logging.getLogger(__name__)

# Calendar v3 endpoint names by method and path, used when a route carries no `name=`.
_CAL = r"/calendar/v3"
_ENDPOINT_PATTERNS: list[tuple[str, re.Pattern[str], str]] = [
    (m, re.compile(p + r"/?$"), name)
    for m, p, name in [
        ("POST", _CAL + r"/calendars/[^/]+/events/watch", "events.watch"),
        ("POST", _CAL + r"/calendars/[^/]+/events/import", "events.import"),
        ("POST", _CAL + r"/calendars/[^/]+/events/quickAdd", "events.quickAdd"),
        ("GET", _CAL + r"/calendars/[^/]+/events", "events.list"),
        ("POST", _CAL + r"/calendars/[^/]+/events", "events.insert"),
        ("GET", _CAL + r"/calendars/[^/]+/events/[^/]+/instances", "events.instances"),
        ("POST", _CAL + r"/calendars/[^/]+/events/[^/]+/move", "events.move"),
        ("GET", _CAL + r"/calendars/[^/]+/events/[^/]+", "events.get"),
        ("PUT", _CAL + r"/calendars/[^/]+/events/[^/]+", "events.update"),
        ("PATCH", _CAL + r"/calendars/[^/]+/events/[^/]+", "events.patch"),
        ("DELETE", _CAL + r"/calendars/[^/]+/events/[^/]+", "events.delete"),
        ("POST", _CAL + r"/freeBusy", "freebusy.query"),
        ("POST", _CAL + r"/channels/stop", "channels.stop"),
        ("GET", _CAL + r"/users/me/calendarList", "calendarList.list"),
        ("GET", _CAL + r"/users/me/calendarList/[^/]+", "calendarList.get"),
        ("GET", _CAL + r"/users/me/settings", "settings.list"),
        ("GET", _CAL + r"/users/me/settings/[^/]+", "settings.get"),
        ("GET", _CAL + r"/calendars/[^/]+", "calendars.get"),
        ("POST", r"/batch/calendar/v3", "batch"),
    ]
]


def endpoint_name(request: web.Request) -> str:
    """A stable name for the endpoint a request hit (what faults and the log match on)."""
    for namer in request.app.get(ENDPOINT_NAMERS_KEY, ()):
        named = namer(request)
        if named:
            return named
    route = request.match_info.route
    name = route.name or (route.resource.name if route.resource is not None else None)
    if name:
        return name
    for method, pattern, guessed in _ENDPOINT_PATTERNS:
        if request.method == method and pattern.match(request.path):
            return guessed
    return f"{request.method} {request.path}"


async def _identify(
    request: web.Request, state: EmulatorState, endpoint: str
) -> tuple[str | None, str | None]:
    """(sub, grant_type) of a request, from whatever credential or hint it carries."""
    grant_type: str | None = None
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        sub = state.sub_for_token(auth.removeprefix("Bearer ").strip())
        if sub:
            return sub, None
    if endpoint in ("token", "revoke"):
        fields: dict[str, str] = dict(request.query)
        if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
            # post() caches the parsed body, so the handler can read it again.
            fields.update({k: str(v) for k, v in (await request.post()).items()})
        grant_type = fields.get("grant_type")
        for key in ("refresh_token", "code", "token"):
            if fields.get(key):
                sub = state.sub_for_token(fields[key])
                if sub:
                    return sub, grant_type
        return None, grant_type
    if endpoint == "authorize":
        hint = request.query.get("login_hint")
        if hint:
            try:
                return state.find_user(hint).sub, None
            except UnknownUser:
                return None, None
        default = state.default_user()
        return (default.sub if default else None), None
    return None, None


def _drop_connection(request: web.Request) -> None:
    """Close the client's connection without a byte of answer (a response lost in transit)."""
    transport = request.transport
    if transport is not None:
        transport.abort()


async def _hold_back(request: web.Request, delay_s: float) -> None:
    """Wait `delay_s`, or less if the client goes away (nobody is left to answer then)."""
    loop = asyncio.get_running_loop()
    until = loop.time() + delay_s
    while loop.time() < until:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(min(0.05, until - loop.time()))


def _fault_middleware(state: EmulatorState) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == CONTROL_PREFIX or request.path.startswith(CONTROL_PREFIX + "/"):
            return await handler(request)
        endpoint = endpoint_name(request)
        sub, grant_type = await _identify(request, state, endpoint)
        fault = state.faults.take(endpoint, request.path, sub)
        status = 500
        try:
            if fault is not None and fault.delay_s > 0:
                await asyncio.sleep(fault.delay_s)
            if fault is not None and fault.hold is not None:
                await fault.hold.wait()
            if fault is not None and fault.status is not None:
                error = fault.oauth_error() if endpoint in OAUTH_ENDPOINTS else fault.api_error()
                response: web.StreamResponse = error.to_response()
            else:
                try:
                    response = await handler(request)
                except (GoogleApiError, OAuthError) as exc:
                    response = exc.to_response()
                if fault is not None and fault.after_delay_s > 0:
                    # Applied: the answer is held back (a client may die meanwhile).
                    await _hold_back(request, fault.after_delay_s)
                if fault is not None and fault.drop_response:
                    status = 0  # applied, never answered
                    _drop_connection(request)
                    # Nothing reaches the client once the transport is gone.
                    return response
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = 499  # the client went away (e.g. gave up on a hang)
            raise
        except Exception:
            log.exception("emulator handler failed on %s %s", request.method, request.path)
            response = GoogleApiError(500, "backendError", "Backend Error").to_response()
            status = 500
            return response
        finally:
            state.inspector.record(
                at=state.clock(),
                method=request.method,
                path=request.path,
                query=dict(request.query),
                endpoint=endpoint,
                user=sub,
                status=status,
                grant_type=grant_type,
                fault_id=fault.fault_id if fault is not None else None,
            )

    return middleware


def create_emulator_app(state: EmulatorState | None = None) -> web.Application:
    """Build the emulator. Pass a `state` to control clock, token lifetime and seed data."""
    state = state or EmulatorState()
    app = web.Application(middlewares=[_fault_middleware(state)])
    app[STATE_KEY] = state
    app[ENDPOINT_NAMERS_KEY] = []
    for part in (control, oauth, calendar_api):
        part.setup(app, state)
    return app
