"""The bad input catalogue: hostile and broken requests against the live stack over HTTP.

Forged and replayed OAuth states, forged push notifications, oversize and malformed bodies,
naive timestamps, windows of years, 10,000 integration ids in one call, unknown fields, SQL
and header injection. Each case names the answer it must get (status and stable problem
`code`) and is checked for what must NOT happen:

* nothing changes: every table (every row, hashed) is the same before and after, and no audit
  entry is written (not even for a refused OAuth callback);
* Google is not called (the emulator's request log has no new entry);
* no secret comes back: no token, code or client secret the emulator issued, no API key, no
  channel token appears in the answer's headers or body;
* nothing is injected: no header the request tried to smuggle into the answer, and the answer's
  X-Request-ID is the caller's only when it was safe.

Requests are sent byte for byte by a raw client (tests/reliability/http_raw.py): ordinary
clients refuse to send most of these.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from string import Template
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from sqlalchemy import insert, select

from gateway.clock import rfc3339
from gateway.db.schema import audit_log, metadata, watch_channels
from gateway.http.appkeys import SYNC_KEY
from gateway.sync.channels import token_digest
from tests.reliability.http_raw import RawAnswer, send_raw
from tests.reliability.live import LiveStack, live_stack
from tests.support.stack import (
    ALICE,
    RETURN_URL,
    EmulatorSecrets,
    LogCapture,
    Stack,
    assert_no_secret_logged,
    issued_secrets,
)

# One live stack serves the whole module (module-scoped fixture): its tests stay on one xdist
# worker (--dist loadgroup) instead of each worker starting a stack of its own.
pytestmark = pytest.mark.xdist_group("bad_input")

WEBHOOK = "/webhooks/google/calendar"


@dataclass(frozen=True)
class World:
    """What the cases refer to: the live stack and a few things made in it."""

    live: LiveStack
    host: str
    port: int
    spent_callback: str  # the callback URL (path and query) a browser already used
    active_channel: str
    active_resource: str
    stopped_channel: str
    stopped_resource: str
    channel_tokens: tuple[str, ...] = field(repr=False)

    @property
    def stack(self) -> Stack:
        return self.live.stack

    def values(self) -> dict[str, str]:
        grant = next(iter(self.stack.google.grants.values()))
        return {
            "iid": self.live.integration_id,
            "key": self.live.api_key,
            "refresh": grant.refresh_token or "",
            "spent": self.spent_callback,
            "active": self.active_channel,
            "active_resource": self.active_resource,
            "stopped": self.stopped_channel,
            "stopped_resource": self.stopped_resource,
            "stopped_token": self.channel_tokens[1],
            "soon": rfc3339(datetime.now(UTC) + timedelta(days=3)),
            "later": rfc3339(datetime.now(UTC) + timedelta(days=3, hours=8)),
            "years": rfc3339(datetime.now(UTC) + timedelta(days=3 * 365)),
        }

    def secrets(self) -> set[str]:
        google = self.stack.google
        return issued_secrets(google) | {
            self.live.api_key,
            self.live.other_tenant_key,
            *self.channel_tokens,
        }


async def _insert_channel(stack: Stack, state: str, token: str) -> tuple[str, str]:
    """A push channel row of Alice's calendar, as the channel manager would have stored it."""
    async with stack.engine.begin() as conn:
        calendar_id, integration_id = (
            await conn.execute(
                select(
                    metadata.tables["calendars"].c.id, metadata.tables["calendars"].c.integration_id
                )
            )
        ).one()
        channel_id = "gwch-" + secrets.token_hex(16)
        resource_id = "res-" + secrets.token_hex(8)
        await conn.execute(
            insert(watch_channels).values(
                id=channel_id,
                calendar_id=calendar_id,
                integration_id=integration_id,
                resource_id=resource_id,
                token_sha256=token_digest(token),
                state=state,
                expires_at=datetime.now(UTC) + timedelta(days=6),
                created_at=datetime.now(UTC),
                last_message_number=1,
            )
        )
    return channel_id, resource_id


async def _prepare(live: LiveStack) -> World:
    stack = live.stack
    # A second connection through the browser steps, keeping the callback URL it used.
    session = await stack.start_connect("bad-input-user", login_hint=ALICE)
    callback = await stack.browser_get(session["connect_url"])
    back = await stack.browser_get(callback)
    assert parse_qs(urlsplit(back).query)["status"] == ["connected"], back
    engine = stack.app[SYNC_KEY]
    for calendar in await engine.ensure_calendars(live.integration_id):
        assert (await engine.sync_calendar(calendar.id)).status == "synced"
    tokens = (secrets.token_urlsafe(32), secrets.token_urlsafe(32))
    active = await _insert_channel(stack, "active", tokens[0])
    stopped = await _insert_channel(stack, "stopped", tokens[1])
    parts = urlsplit(callback)
    url = urlsplit(live.base_url)
    assert url.hostname is not None and url.port is not None
    return World(
        live=live,
        host=url.hostname,
        port=url.port,
        spent_callback=f"{parts.path}?{parts.query}",
        active_channel=active[0],
        active_resource=active[1],
        stopped_channel=stopped[0],
        stopped_resource=stopped[1],
        channel_tokens=tokens,
    )


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, emulator_secrets: EmulatorSecrets
) -> Iterator[World]:
    # The stack checks its own log for what the emulator issued; the channel tokens and OAuth
    # states sent here are secrets it does not know of.
    capture = LogCapture()
    logging.getLogger().addHandler(capture)
    try:
        with live_stack(tmp_path_factory.mktemp("bad-input"), emulator_secrets) as live:
            made = live.run(_prepare(live))
            yield made
    finally:
        logging.getLogger().removeHandler(capture)
    state = parse_qs(urlsplit(made.spent_callback).query)["state"][0]
    assert_no_secret_logged(capture.lines, {*made.channel_tokens, state, FORGED_STATE})


# -- what must not change -----------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    tables: dict[str, str]  # table -> SHA-256 of its sorted rows
    audit: list[tuple[Any, ...]]
    google_seq: int


async def _snapshot(stack: Stack) -> Snapshot:
    digests: dict[str, str] = {}
    audit: list[tuple[Any, ...]] = []
    async with stack.engine.connect() as conn:
        for table in metadata.sorted_tables:
            rows = [tuple(r) for r in (await conn.execute(select(table))).all()]
            if table is audit_log:
                audit = rows
                continue
            text = "\n".join(sorted(repr(r) for r in rows))
            digests[table.name] = f"{len(rows)}:{hashlib.sha256(text.encode()).hexdigest()}"
    records = stack.google.inspector.records
    return Snapshot(digests, audit, records[-1].seq if records else 0)


# -- the catalogue ------------------------------------------------------------------------------

Check = Callable[[RawAnswer, World], None]


@dataclass(frozen=True)
class Bad:
    """One hostile request. `target`, header lines and `body` are templates: `$iid`, `$key`,
    ... are filled from `World.values()`. `code` None: not a problem+json answer (the OAuth
    callback answers the browser with a page or a redirect)."""

    method: str
    target: str
    status: int
    code: str | None
    headers: tuple[str | bytes, ...] = ()
    body: str | bytes | Callable[[], bytes] = b""
    auth: bool = True
    chunked: bool = False
    check: Check | None = None


def _json_post(path: str, body: str | bytes | Callable[[], bytes], status: int, code: str) -> Bad:
    return Bad("POST", path, status, code, ("Content-Type: application/json",), body)


WINDOW = '"time_min": "$soon", "time_max": "$later"'
SLOTS = '"mode": "all", "duration_minutes": 30, "time_zone": "UTC"'


def _many_ids(count: int, fmt: str) -> Callable[[], bytes]:
    def build() -> bytes:
        ids = ",".join(json.dumps(fmt % n) for n in range(count))
        return f'{{"integration_ids": [{ids}], {WINDOW}}}'.encode()

    return build


def _many_slot_ids(count: int) -> Callable[[], bytes]:
    def build() -> bytes:
        ids = ",".join(json.dumps(f"int_{n:024x}") for n in range(count))
        return f'{{"integration_ids": [{ids}], {SLOTS}, {WINDOW}}}'.encode()

    return build


def _page_says(text: str) -> Check:
    def check(answer: RawAnswer, _world: World) -> None:
        assert (answer.header("Content-Type") or "").startswith("text/plain")
        assert text in answer.body.decode()
        assert answer.header("Cache-Control") == "no-store"

    return check


def _back_to_app_with(error: str) -> Check:
    def check(answer: RawAnswer, _world: World) -> None:
        location = answer.header("Location") or ""
        assert location.startswith(RETURN_URL), location
        query = parse_qs(urlsplit(location).query)
        query.pop("user_id", None)  # the session's own user id, handed back to the app
        assert query == {"status": ["error"], "error": [error]}, location

    return check


def _no_integrations(answer: RawAnswer, _world: World) -> None:
    assert json.loads(answer.body) == {"integrations": []}


def _item_not_found(answer: RawAnswer, _world: World) -> None:
    [result] = json.loads(answer.body)["results"]
    assert result["problem"]["code"] == "integration_not_found", result


def _fresh_request_id(answer: RawAnswer, _world: World) -> None:
    assert (answer.header("X-Request-ID") or "").startswith("req_"), answer.headers


def _webhook(channel: str, token: str | None, resource: str, **override: str) -> tuple[str, ...]:
    headers = {
        "X-Goog-Channel-ID": channel,
        "X-Goog-Channel-Token": token,
        "X-Goog-Resource-ID": resource,
        "X-Goog-Resource-State": "exists",
        "X-Goog-Message-Number": "99",
        "X-Goog-Channel-Expiration": "Tue, 08 Dec 2026 10:00:00 GMT",
    }
    headers.update(override)
    return tuple(f"{k}: {v}" for k, v in headers.items() if v is not None and v != "-")


FREEBUSY = "/v1/integrations/$iid/freebusy"
SQL = "' OR '1'='1' --"
SQLQ = quote(SQL, safe="")
FORGED_STATE = secrets.token_urlsafe(32)

CASES: dict[str, Bad] = {
    # -- OAuth callback: the browser gets a page (unknown state) or its app's error redirect --
    "callback forged state": Bad(
        "GET",
        f"/oauth/google/callback?state={FORGED_STATE}&code=4/0AforgedCode",
        400,
        None,
        auth=False,
        check=_page_says("invalid_state"),
    ),
    "callback without state": Bad(
        "GET", "/oauth/google/callback?code=4/0Aabc", 400, None, auth=False
    ),
    "callback oversize state": Bad(
        "GET", "/oauth/google/callback?state=" + "A" * 5000 + "&code=x", 400, None, auth=False
    ),
    "callback SQL in state": Bad(
        "GET", f"/oauth/google/callback?state={SQLQ}&code={SQLQ}", 400, None, auth=False
    ),
    "callback replayed": Bad(
        "GET", "$spent", 302, None, auth=False, check=_back_to_app_with("invalid_state")
    ),
    "callback replayed with a new code": Bad(
        "GET",
        "$spent&code=4/0Aother",
        302,
        None,
        auth=False,
        check=_back_to_app_with("invalid_state"),
    ),
    # -- forged push notifications: 404 for every forgery, 400 for a broken one -------------
    "webhook unknown channel": Bad(
        "POST",
        WEBHOOK,
        404,
        "channel_not_found",
        _webhook("gwch-" + "0" * 32, "guessed", "res-x"),
        auth=False,
    ),
    "webhook wrong token": Bad(
        "POST",
        WEBHOOK,
        404,
        "channel_not_found",
        _webhook("$active", secrets.token_urlsafe(32), "$active_resource"),
        auth=False,
    ),
    "webhook without token": Bad(
        "POST",
        WEBHOOK,
        404,
        "channel_not_found",
        _webhook("$active", None, "$active_resource"),
        auth=False,
    ),
    "webhook wrong resource": Bad(
        "POST",
        WEBHOOK,
        404,
        "channel_not_found",
        _webhook("$stopped", "$stopped_token", "res-someone-else"),
        auth=False,
    ),
    "webhook stopped channel, right token": Bad(
        "POST",
        WEBHOOK,
        404,
        "channel_not_found",
        _webhook("$stopped", "$stopped_token", "$stopped_resource"),
        auth=False,
    ),
    "webhook missing channel id": Bad(
        "POST",
        WEBHOOK,
        400,
        "invalid_notification",
        _webhook("-", "x", "$active_resource"),
        auth=False,
    ),
    "webhook missing message number": Bad(
        "POST",
        WEBHOOK,
        400,
        "invalid_notification",
        _webhook("$active", "x", "$active_resource", **{"X-Goog-Message-Number": "-"}),
        auth=False,
    ),
    "webhook unknown resource state": Bad(
        "POST",
        WEBHOOK,
        400,
        "invalid_notification",
        _webhook("$active", "x", "$active_resource", **{"X-Goog-Resource-State": "gone"}),
        auth=False,
    ),
    "webhook SQL in channel id": Bad(
        "POST",
        WEBHOOK,
        400,
        "invalid_notification",
        _webhook(SQL, "x", "$active_resource"),
        auth=False,
    ),
    "webhook with a body": Bad(
        "POST",
        WEBHOOK,
        413,
        "payload_too_large",
        _webhook("$active", "x", "$active_resource"),
        body=b"x" * 4096,
        auth=False,
    ),
    # -- oversize and malformed bodies ------------------------------------------------------
    "body over 64 KiB": _json_post(
        "/v1/freebusy",
        b'{"integration_ids": ["' + b"a" * 70_000 + b'"]}',
        413,
        "payload_too_large",
    ),
    "chunked body over 64 KiB": Bad(
        "POST",
        "/v1/freebusy",
        413,
        "payload_too_large",
        ("Content-Type: application/json",),
        b'{"x": "' + b"a" * 200_000 + b'"}',
        chunked=True,
    ),
    "body not JSON": _json_post("/v1/freebusy", "integration_ids=1", 400, "malformed_json"),
    "body truncated JSON": _json_post(
        "/v1/freebusy", '{"integration_ids": ["$iid"', 400, "malformed_json"
    ),
    "body empty": _json_post("/v1/freebusy", b"", 400, "malformed_json"),
    "body not UTF-8": _json_post("/v1/freebusy", b'{"a": "\xff\xfe"}', 400, "malformed_json"),
    "body NaN": _json_post("/v1/slots", '{"duration_minutes": NaN}', 400, "malformed_json"),
    "body nested 10,000 deep": _json_post(
        "/v1/freebusy", b"[" * 10_000 + b"]" * 10_000, 400, "malformed_json"
    ),
    "body a JSON array": _json_post("/v1/freebusy", '["$iid"]', 422, "invalid_body"),
    "body duplicate key": _json_post(
        "/v1/freebusy",
        f'{{"integration_ids": ["$iid"], "integration_ids": [], {WINDOW}}}',
        422,
        "duplicate_field",
    ),
    "body wrong type": _json_post(
        "/v1/freebusy", f'{{"integration_ids": "$iid", {WINDOW}}}', 422, "invalid_field"
    ),
    "body not JSON content type": Bad(
        "POST",
        "/v1/freebusy",
        415,
        "unsupported_media_type",
        ("Content-Type: text/plain",),
        f'{{"integration_ids": ["$iid"], {WINDOW}}}',
    ),
    "connect session body over 64 KiB": _json_post(
        "/v1/connect-sessions",
        '{"user_id": "' + "u" * 70_000 + '"}',
        413,
        "payload_too_large",
    ),
    # -- timestamps without an offset, windows of years --------------------------------------
    "freebusy naive time_min": Bad(
        "GET", FREEBUSY + "?time_min=2026-12-01T09:00:00&time_max=$later", 422, "invalid_field"
    ),
    "freebusy date only": Bad(
        "GET", FREEBUSY + "?time_min=2026-12-01&time_max=$later", 422, "invalid_field"
    ),
    "freebusy epoch seconds": Bad(
        "GET", FREEBUSY + "?time_min=1767258000&time_max=$later", 422, "invalid_field"
    ),
    "batch freebusy naive time_max": _json_post(
        "/v1/freebusy",
        '{"integration_ids": ["$iid"], "time_min": "$soon", "time_max": "2026-12-01T18:00:00"}',
        422,
        "invalid_field",
    ),
    "slots naive time_min": _json_post(
        "/v1/slots",
        f'{{"integration_ids": ["$iid"], {SLOTS}, "time_min": "2026-12-01 09:00",'
        ' "time_max": "$later"}',
        422,
        "invalid_field",
    ),
    "freebusy window of years": Bad(
        "GET", FREEBUSY + "?time_min=$soon&time_max=$years", 422, "invalid_field"
    ),
    "slots window of years": _json_post(
        "/v1/slots",
        f'{{"integration_ids": ["$iid"], {SLOTS}, "time_min": "$soon", "time_max": "$years"}}',
        422,
        "invalid_field",
    ),
    "freebusy window the wrong way round": Bad(
        "GET", FREEBUSY + "?time_min=$later&time_max=$soon", 422, "invalid_field"
    ),
    "freebusy year 0001 to 9999": Bad(
        "GET",
        FREEBUSY + "?time_min=0001-01-01T00:00:00Z&time_max=9999-12-31T23:59:59Z",
        422,
        "invalid_field",
    ),
    # -- 10,000 integration ids in one call ---------------------------------------------------
    "batch freebusy with 10,000 ids": _json_post(
        "/v1/freebusy", _many_ids(10_000, "int_%024x"), 413, "payload_too_large"
    ),
    "slots with 10,000 ids": _json_post(
        "/v1/slots", _many_slot_ids(10_000), 413, "payload_too_large"
    ),
    "batch freebusy with 10,000 short ids": Bad(
        "POST",
        "/v1/freebusy",
        413,
        "payload_too_large",
        ("Content-Type: application/json",),
        _many_ids(10_000, "%d"),
        chunked=True,
    ),
    "batch freebusy with 5,000 short ids": _json_post(
        "/v1/freebusy", _many_ids(5_000, "%x"), 422, "invalid_field"
    ),
    "batch freebusy with 51 ids": _json_post(
        "/v1/freebusy", _many_ids(51, "int_%024x"), 422, "invalid_field"
    ),
    # -- unknown fields -------------------------------------------------------------------------
    "freebusy unknown query parameter": Bad(
        "GET", FREEBUSY + "?time_min=$soon&time_max=$later&calendar=all", 422, "unknown_field"
    ),
    "receipt keys with a query parameter": Bad(
        "GET", f"/v1/receipts/keys?key_id={SQLQ}", 422, "unknown_field", auth=False
    ),
    "receipt keys with a repeated parameter": Bad(
        "GET", "/v1/receipts/keys?a=1&a=2", 422, "duplicate_field", auth=False
    ),
    "batch freebusy unknown field": _json_post(
        "/v1/freebusy",
        f'{{"integration_ids": ["$iid"], {WINDOW}, "force": true}}',
        422,
        "unknown_field",
    ),
    "slots unknown field": _json_post(
        "/v1/slots",
        f'{{"integration_ids": ["$iid"], {SLOTS}, {WINDOW}, "tenant_id": "x"}}',
        422,
        "unknown_field",
    ),
    "connect session unknown field": _json_post(
        "/v1/connect-sessions",
        f'{{"user_id": "u", "return_url": "{RETURN_URL}", "scopes": ["admin"]}}',
        422,
        "unknown_field",
    ),
    "a refresh token in an unknown field": _json_post(
        "/v1/freebusy",
        f'{{"integration_ids": ["$iid"], {WINDOW}, "token": "$refresh"}}',
        422,
        "unknown_field",
    ),
    "a refresh token as a timestamp": Bad(
        "GET", FREEBUSY + "?time_min=$refresh&time_max=$later", 422, "invalid_field"
    ),
    # -- SQL injection ----------------------------------------------------------------------------
    "SQL in the integration id": Bad(
        "GET", f"/v1/integrations/int_{SQLQ}", 404, "integration_not_found"
    ),
    "SQL in the freebusy integration id": Bad(
        "GET",
        f"/v1/integrations/{SQLQ}/freebusy?time_min=$soon&time_max=$later",
        404,
        "integration_not_found",
    ),
    "SQL in user_id": Bad(
        "GET", f"/v1/integrations?user_id={SQLQ}", 200, None, check=_no_integrations
    ),
    "SQL UNION in user_id": Bad(
        "GET",
        "/v1/integrations?user_id=" + quote("x' UNION SELECT * FROM api_keys --", safe=""),
        200,
        None,
        check=_no_integrations,
    ),
    "SQL in batch ids": Bad(
        "POST",
        "/v1/freebusy",
        200,
        None,
        ("Content-Type: application/json",),
        f'{{"integration_ids": ["{SQL}"], {WINDOW}}}',
        check=_item_not_found,
    ),
    "SQL in slots ids": _json_post(
        "/v1/slots",
        f'{{"integration_ids": ["x\'; DROP TABLE integrations; --"], {SLOTS}, {WINDOW}}}',
        404,
        "integration_not_found",
    ),
    "SQL in time zone": _json_post(
        "/v1/slots",
        f'{{"integration_ids": ["$iid"], "mode": "all", "duration_minutes": 30,'
        f' "time_zone": "UTC\'; DELETE FROM integrations; --", {WINDOW}}}',
        422,
        "invalid_field",
    ),
    "SQL as the API key": Bad(
        "GET",
        "/v1/integrations",
        401,
        "unauthenticated",
        (f"Authorization: Bearer cgw_{SQL}_x",),
        auth=False,
    ),
    # -- header injection -------------------------------------------------------------------
    "encoded CRLF in X-Request-ID": Bad(
        "GET",
        FREEBUSY + "?time_min=2026-12-01T09:00:00&time_max=$later",
        422,
        "invalid_field",
        ("X-Request-ID: abc%0d%0aSet-Cookie:%20session=evil",),
        check=_fresh_request_id,
    ),
    "CRLF in X-Request-ID": Bad(
        "GET",
        FREEBUSY + "?time_min=2026-12-01T09:00:00&time_max=$later",
        422,
        "invalid_field",
        (b"X-Request-ID: abc\r\nSet-Cookie: session=evil",),
    ),
    "bare CR in X-Request-ID": Bad(
        "GET",
        "/v1/integrations",
        400,
        None,
        (b"X-Request-ID: abc\rSet-Cookie: session=evil",),
    ),
    "bare LF in X-Request-ID": Bad(
        "GET",
        "/v1/integrations",
        400,
        None,
        (b"X-Request-ID: abc\nSet-Cookie: session=evil",),
    ),
    "NUL in X-Request-ID": Bad(
        "GET",
        "/v1/integrations",
        400,
        None,
        (b"X-Request-ID: abc\x00def",),
    ),
    "CR in the API key": Bad(
        "GET",
        "/v1/integrations",
        400,
        None,
        (b"Authorization: Bearer cgw_abc\rdef",),
        auth=False,
    ),
    "non-ASCII X-Request-ID": Bad(
        "GET",
        FREEBUSY + "?time_min=2026-12-01&time_max=$later",
        422,
        "invalid_field",
        ("X-Request-ID: caf\u00e9".encode("latin-1"),),
        check=_fresh_request_id,
    ),
    "CRLF in Idempotency-Key": Bad(
        "POST",
        "/v1/slots",
        422,
        "unknown_field",
        ("Content-Type: application/json", b"Idempotency-Key: k1\r\nSet-Cookie: session=evil"),
        f'{{"integration_ids": ["$iid"], {SLOTS}, {WINDOW}, "x": 1}}',
    ),
    "CRLF in return_url": _json_post(
        "/v1/connect-sessions",
        '{"user_id": "u", "return_url": "https://app.example.com/\\r\\nSet-Cookie: a=b"}',
        422,
        "invalid_field",
    ),
    "encoded CRLF in a foreign return_url": _json_post(
        "/v1/connect-sessions",
        '{"user_id": "u", "return_url": "https://evil.example.com/%0d%0aSet-Cookie:%20a=b"}',
        422,
        "return_url_not_allowed",
    ),
    "userinfo trick in return_url": _json_post(
        "/v1/connect-sessions",
        '{"user_id": "u", "return_url": "https://app.example.com@evil.example.com/"}',
        422,
        "return_url_not_allowed",
    ),
    "CRLF in login_hint": _json_post(
        "/v1/connect-sessions",
        f'{{"user_id": "u", "return_url": "{RETURN_URL}", "login_hint": "a@b.c\\r\\nBcc: x"}}',
        422,
        "invalid_field",
    ),
    "CRLF in user_id": Bad(
        "GET", "/v1/integrations?user_id=a%0d%0aSet-Cookie:%20x", 422, "invalid_field"
    ),
    "CRLF in the path": Bad(
        "GET", "/v1/integrations/int_x%0d%0aSet-Cookie:%20a=b", 404, "integration_not_found"
    ),
}
# Headers the requests above try to smuggle into the answer.
SMUGGLED = {"set-cookie", "bcc", "x-injected"}


def _fill(template: str | bytes, values: dict[str, str]) -> bytes:
    if isinstance(template, bytes):
        return template
    return Template(template).safe_substitute(values).encode("utf-8")


def _send(world: World, case: Bad) -> RawAnswer:
    values = world.values()
    headers = [_fill(h, values) for h in case.headers]
    if case.auth:
        headers.append(f"Authorization: Bearer {world.live.api_key}".encode())
    body = case.body() if callable(case.body) else _fill(case.body, values)
    target = _fill(case.target, values).decode()
    return send_raw(
        world.host,
        world.port,
        case.method,
        target,
        headers=headers,
        body=body,
        chunked=case.chunked,
    )


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gets_its_4xx_and_changes_nothing(world: World, name: str) -> None:
    case = CASES[name]
    before = world.live.run(_snapshot(world.stack))
    started = time.perf_counter()
    answer = _send(world, case)
    elapsed_ms = (time.perf_counter() - started) * 1000
    after = world.live.run(_snapshot(world.stack))

    assert answer.status == case.status, (name, answer.status, answer.body[:300])
    if case.code is not None:
        content_type = answer.header("Content-Type") or ""
        assert content_type.startswith("application/problem+json"), answer.headers
        problem = json.loads(answer.body)
        assert problem["code"] == case.code, problem
        assert problem["status"] == case.status
        assert {"type", "title", "detail"} <= set(problem)
    if case.check is not None:
        case.check(answer, world)

    wire = answer.raw_head + answer.body
    leaked = [s[:6] + "..." for s in world.secrets() if s.encode() in wire]
    assert not leaked, f"{name}: the answer holds secrets {leaked}"
    assert not (answer.header_names() & SMUGGLED), answer.headers

    assert after.tables == before.tables, f"{name} changed stored data"
    # Not even a refused callback writes an audit entry: it names no live session, so it
    # identifies nobody and anyone could repeat it (it is counted in a metric instead).
    new_audit = after.audit[len(before.audit) :]
    assert new_audit == [], new_audit
    assert after.google_seq == before.google_seq, f"{name} called Google"
    print(f"{name}: {answer.status} in {elapsed_ms:.1f} ms")


def test_encoded_crlf_in_an_allowed_return_url_stays_encoded(world: World) -> None:
    """A return_url that passes the allow-list with %0d%0a in its query (in its path it is
    refused: tests/connections/test_return_urls.py): the browser's final redirect carries it
    percent-encoded, so no header can be split off."""
    stack = world.stack
    evil = RETURN_URL + "?next=%0D%0ASet-Cookie:%20session=evil"

    async def journey() -> str:
        async with stack.http.post(
            stack.url("/v1/connect-sessions"),
            json={"user_id": "crlf-user", "return_url": evil, "login_hint": ALICE},
            headers=stack.auth(),
        ) as r:
            assert r.status == 201, await r.text()
            session = await r.json()
        callback = await stack.browser_get(session["connect_url"])
        return callback

    callback = world.live.run(journey())
    parts = urlsplit(callback)
    answer = send_raw(world.host, world.port, "GET", f"{parts.path}?{parts.query}")
    assert answer.status == 302
    location = answer.header("Location") or ""
    # with_query re-encodes the query it keeps: the CR LF stay %0D%0A.
    assert location.startswith(RETURN_URL + "?next=%0D%0ASet-Cookie%3A+session%3Devil&status="), (
        location
    )
    assert "\r" not in location and "\n" not in location
    assert "set-cookie" not in answer.header_names()


def test_catalogue_leaves_the_stack_serving(world: World) -> None:
    """After every hostile request above, an ordinary one still works."""
    values = world.values()
    answer = send_raw(
        world.host,
        world.port,
        "GET",
        f"/v1/integrations/{values['iid']}/freebusy?time_min={values['soon']}"
        f"&time_max={values['later']}",
        headers=[f"Authorization: Bearer {world.live.api_key}".encode()],
    )
    assert answer.status == 200, answer.body
    assert json.loads(answer.body)["complete"] is True
