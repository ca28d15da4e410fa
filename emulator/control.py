"""The emulator's control and inspection API under `/_emulator/` (JSON in, JSON out).

Tests in-process can call the same operations as Python methods on `EmulatorState`,
`state.faults` (`FaultInjector`) and `state.inspector` (`Inspector`); this API is for tests
over HTTP and for scripting a standalone emulator. Faults never apply to these routes.

Other parts add their own control routes under `/_emulator/<part>/...` in their own `setup()`
(e.g. `add_control_route(app, "POST", "/calendar/sync-tokens/invalidate", handler)`, from
`emulator.routing`, the only module that knows the prefix).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from emulator.routing import add_control_route, bad_request, json_body, not_found
from emulator.state import CONSENT_MODES, EmulatorState, Grant, UnknownUser, User


def user_json(user: User) -> dict[str, Any]:
    return {
        "sub": user.sub,
        "email": user.email,
        "consent": user.consent,
        "partial_scopes": sorted(user.partial_scopes),
        "time_zone": user.time_zone,
        "name": user.name,
    }


def grant_json(state: EmulatorState, grant: Grant) -> dict[str, Any]:
    """A grant with its tokens: this is a test tool, the test asking may need them."""
    user = state.users.get(grant.sub)
    return {
        "grant_id": grant.grant_id,
        "sub": grant.sub,
        "email": user.email if user else None,
        "client_id": grant.client_id,
        "scopes": sorted(grant.scopes),
        "refresh_token": grant.refresh_token,
        "retired_refresh_tokens": list(grant.retired_refresh_tokens),
        "access_tokens": [
            t.token for t in state.access_tokens.values() if t.grant_id == grant.grant_id
        ],
        "created_at": grant.created_at,
        "revoked": grant.revoked,
        "revoked_at": grant.revoked_at,
        "revoked_by": grant.revoked_by,
    }


def _rfc3339(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).isoformat().replace("+00:00", "Z")


def _str_list(value: Any, name: str) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise bad_request(f"{name} must be a list of strings or a space-separated string")


def _number(body: dict[str, Any], name: str) -> float:
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"{name} must be a number")
    return float(value)


def setup(app: web.Application, state: EmulatorState) -> None:
    """Add the control routes."""
    routes = web.RouteTableDef()

    def find_user(ref: str) -> User:
        try:
            return state.find_user(ref)
        except UnknownUser:
            raise not_found(f"no user {ref!r}") from None

    @routes.get("/health")
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    @routes.post("/reset")
    async def reset(request: web.Request) -> web.Response:
        """Forget faults, the request log, counters and scripted rotations (not users/clients)."""
        state.faults.clear()
        state.inspector.reset()
        state.rotate_next_refresh.clear()
        state.calendars.reset_faults()
        return web.json_response({"ok": True})

    # -- clients and users ----------------------------------------------------------------

    @routes.get("/clients")
    async def list_clients(request: web.Request) -> web.Response:
        return web.json_response(
            [
                {
                    "client_id": c.client_id,
                    "client_secret": c.client_secret,
                    "redirect_uris": c.redirect_uris,
                }
                for c in state.clients.values()
            ]
        )

    @routes.post("/clients")
    async def add_client(request: web.Request) -> web.Response:
        body = await json_body(request)
        client_id, secret = body.get("client_id"), body.get("client_secret")
        if (
            not isinstance(client_id, str)
            or not client_id
            or not isinstance(secret, str)
            or not secret
        ):
            raise bad_request("client_id and client_secret are required strings")
        uris = _str_list(body.get("redirect_uris", []), "redirect_uris")
        client = state.add_client(client_id, secret, uris)
        return web.json_response(
            {"client_id": client.client_id, "redirect_uris": client.redirect_uris}, status=201
        )

    @routes.get("/users")
    async def list_users(request: web.Request) -> web.Response:
        return web.json_response([user_json(u) for u in state.users.values()])

    @routes.post("/users")
    async def add_user(request: web.Request) -> web.Response:
        body = await json_body(request)
        sub, email = body.get("sub"), body.get("email")
        if not isinstance(sub, str) or not sub or not isinstance(email, str) or not email:
            raise bad_request("sub and email are required strings")
        user = state.add_user(sub, email)
        _apply_user_fields(user, body)
        return web.json_response(user_json(user), status=201)

    @routes.get("/users/{user}")
    async def get_user(request: web.Request) -> web.Response:
        return web.json_response(user_json(find_user(request.match_info["user"])))

    @routes.patch("/users/{user}")
    async def patch_user(request: web.Request) -> web.Response:
        user = find_user(request.match_info["user"])
        _apply_user_fields(user, await json_body(request))
        return web.json_response(user_json(user))

    @routes.post("/users/{user}/revoke")
    async def revoke_user(request: web.Request) -> web.Response:
        """The user removes the app's access in their Google account."""
        user = find_user(request.match_info["user"])
        client_id = (await json_body(request)).get("client_id")
        revoked = state.revoke_user_access(
            user.sub, client_id if isinstance(client_id, str) else None
        )
        return web.json_response({"revoked": [grant_json(state, g) for g in revoked]})

    @routes.post("/users/{user}/tokens")
    async def issue_tokens(request: web.Request) -> web.Response:
        """Tokens for a user without the browser dance (demo, benchmarks)."""
        user = find_user(request.match_info["user"])
        body = await json_body(request)
        client_id = body.get("client_id")
        scopes = _str_list(
            body.get("scopes", ["https://www.googleapis.com/auth/calendar"]), "scopes"
        )
        try:
            issued = state.issue_tokens(
                user.sub,
                client_id if isinstance(client_id, str) else None,
                scopes,
                offline=bool(body.get("offline", True)),
            )
        except LookupError as exc:
            raise bad_request(str(exc)) from None
        return web.json_response(
            {
                "access_token": issued.token,
                "refresh_token": issued.refresh_token,
                "expires_in": state.access_token_lifetime_s,
                "scope": " ".join(sorted(issued.grant.scopes)),
                "client_id": issued.grant.client_id,
                "grant_id": issued.grant.grant_id,
            },
            status=201,
        )

    @routes.post("/refresh-rotation")
    async def rotate(request: web.Request) -> web.Response:
        """The next `times` refreshes (of `user`, else anyone) return a new refresh token."""
        body = await json_body(request)
        user, times = body.get("user"), body.get("times", 1)
        if not isinstance(times, int) or times < 1:
            raise bad_request("times must be a positive integer")
        if user is not None:
            user = find_user(str(user)).sub
        state.rotate_refresh_token_next(user, times)
        return web.json_response({"pending": state.rotate_next_refresh})

    # -- settings and clock ---------------------------------------------------------------

    def settings_json() -> dict[str, Any]:
        return {
            "access_token_lifetime_s": state.access_token_lifetime_s,
            "auth_code_lifetime_s": state.auth_code_lifetime_s,
            "default_user": state.default_user_sub,
            "request_log_size": state.inspector.max_records,
            "max_refresh_tokens_per_client": state.max_refresh_tokens_per_client,
            "refresh_token_lifetime_s": state.refresh_token_lifetime_s,
            "merge_earlier_grants": state.merge_earlier_grants,
        }

    @routes.get("/settings")
    async def get_settings(request: web.Request) -> web.Response:
        return web.json_response(settings_json())

    @routes.patch("/settings")
    async def patch_settings(request: web.Request) -> web.Response:
        body = await json_body(request)
        ints = {
            "access_token_lifetime_s": 1,
            "auth_code_lifetime_s": 1,
            "request_log_size": 1,
            "max_refresh_tokens_per_client": 1,
        }
        for name, minimum in ints.items():
            if name in body and (not isinstance(body[name], int) or body[name] < minimum):
                raise bad_request(f"{name} must be an integer >= {minimum}")
        if "merge_earlier_grants" in body and not isinstance(body["merge_earlier_grants"], bool):
            raise bad_request("merge_earlier_grants must be true or false")
        if "access_token_lifetime_s" in body:
            state.access_token_lifetime_s = body["access_token_lifetime_s"]
        if "auth_code_lifetime_s" in body:
            state.auth_code_lifetime_s = body["auth_code_lifetime_s"]
        if "request_log_size" in body:
            state.inspector.max_records = body["request_log_size"]
        if "max_refresh_tokens_per_client" in body:
            state.max_refresh_tokens_per_client = body["max_refresh_tokens_per_client"]
        if "refresh_token_lifetime_s" in body:
            lifetime = body["refresh_token_lifetime_s"]
            if lifetime is not None and (not isinstance(lifetime, int) or lifetime < 1):
                raise bad_request("refresh_token_lifetime_s must be null or an integer >= 1")
            state.refresh_token_lifetime_s = lifetime
        if "merge_earlier_grants" in body:
            state.merge_earlier_grants = body["merge_earlier_grants"]
        if "default_user" in body:
            ref = body["default_user"]
            state.default_user_sub = find_user(str(ref)).sub if ref is not None else None
        return web.json_response(settings_json())

    def clock_json() -> dict[str, Any]:
        now = state.clock()
        return {"now_s": now, "now": _rfc3339(now), "offset_s": state.clock_offset_s}

    @routes.get("/clock")
    async def get_clock(request: web.Request) -> web.Response:
        return web.json_response(clock_json())

    @routes.post("/clock")
    async def move_clock(request: web.Request) -> web.Response:
        """Body: {"advance_s": N} or {"now_s": epoch seconds} or {"now": RFC 3339}."""
        body = await json_body(request)
        if "advance_s" in body:
            state.advance_clock(_number(body, "advance_s"))
        elif "now_s" in body:
            state.set_clock(_number(body, "now_s"))
        elif isinstance(body.get("now"), str):
            try:
                when = dt.datetime.fromisoformat(body["now"].replace("Z", "+00:00"))
            except ValueError:
                raise bad_request("now must be RFC 3339") from None
            if when.tzinfo is None:
                raise bad_request("now must carry an offset")
            state.set_clock(when.timestamp())
        else:
            raise bad_request("give advance_s, now_s or now")
        return web.json_response(clock_json())

    # -- faults ---------------------------------------------------------------------------

    @routes.get("/faults")
    async def list_faults(request: web.Request) -> web.Response:
        return web.json_response([f.to_json() for f in state.faults.faults])

    @routes.post("/faults")
    async def add_fault(request: web.Request) -> web.Response:
        """Body: {"status"?, "reason"?, "times"?, "user"?, "endpoint"?, "delay_s"?,
        "drop_response"?, "after_delay_s"?}."""
        body = await json_body(request)
        user = body.get("user")
        try:
            fault = state.faults.add(
                status=body.get("status"),
                reason=body.get("reason"),
                times=body.get("times", 1),
                user=find_user(str(user)).sub if user is not None else None,
                endpoint=body.get("endpoint"),
                delay_s=float(body.get("delay_s", 0.0)),
                drop_response=bool(body.get("drop_response", False)),
                after_delay_s=float(body.get("after_delay_s", 0.0)),
            )
        except (TypeError, ValueError) as exc:
            raise bad_request(str(exc)) from None
        return web.json_response(fault.to_json(), status=201)

    @routes.delete("/faults")
    async def clear_faults(request: web.Request) -> web.Response:
        state.faults.clear()
        return web.json_response({"ok": True})

    @routes.delete("/faults/{fault_id}")
    async def delete_fault(request: web.Request) -> web.Response:
        raw = request.match_info["fault_id"]
        if not raw.isdigit() or not state.faults.remove(int(raw)):
            raise not_found(f"no fault {raw}")
        return web.json_response({"ok": True})

    # -- inspection -----------------------------------------------------------------------

    @routes.get("/requests")
    async def list_requests(request: web.Request) -> web.Response:
        """Query: endpoint, user (sub or email), method, path_prefix, status, since (seq)."""
        q = request.query
        user = find_user(q["user"]).sub if "user" in q else None
        try:
            status = int(q["status"]) if "status" in q else None
            since = int(q.get("since", "0"))
        except ValueError:
            raise bad_request("status and since must be integers") from None
        records = state.inspector.requests(
            endpoint=q.get("endpoint"),
            user=user,
            method=q.get("method"),
            path_prefix=q.get("path_prefix"),
            status=status,
            since_seq=since,
        )
        return web.json_response([r.to_json() for r in records])

    @routes.delete("/requests")
    async def clear_requests(request: web.Request) -> web.Response:
        state.inspector.reset()
        return web.json_response({"ok": True})

    @routes.get("/token-calls")
    async def token_calls(request: web.Request) -> web.Response:
        """{sub: {grant_type: calls}} of the token endpoint, faulted and failed calls included."""
        return web.json_response(state.inspector.token_call_counts())

    @routes.get("/grants")
    async def list_grants(request: web.Request) -> web.Response:
        """Query: user (sub or email), revoked (true/false)."""
        q = request.query
        sub = find_user(q["user"]).sub if "user" in q else None
        revoked = {"true": True, "false": False}.get(q.get("revoked", ""))
        grants = [
            g
            for g in state.grants.values()
            if (sub is None or g.sub == sub) and (revoked is None or g.revoked == revoked)
        ]
        return web.json_response([grant_json(state, g) for g in grants])

    for route in routes:
        assert isinstance(route, web.RouteDef)
        add_control_route(app, route.method, route.path, route.handler)


def _apply_user_fields(user: User, body: dict[str, Any]) -> None:
    """Update a user from control-API JSON; 400 on a bad value (nothing half-applied)."""
    consent = body.get("consent", user.consent)
    if consent not in CONSENT_MODES:
        raise bad_request(f"consent must be one of {list(CONSENT_MODES)}")
    partial = (
        frozenset(_str_list(body["partial_scopes"], "partial_scopes"))
        if "partial_scopes" in body
        else user.partial_scopes
    )
    for name in ("email", "time_zone", "name"):
        if name in body and not isinstance(body[name], str):
            raise bad_request(f"{name} must be a string")
    user.consent = consent
    user.partial_scopes = partial
    user.email = body.get("email", user.email)
    user.time_zone = body.get("time_zone", user.time_zone)
    user.name = body.get("name", user.name)
