"""The whole flow, logged as operators get it (JSON lines from the redacting handler, root
logger, every level, the access log too), searched for every token the emulator issued.

The session-wide check in tests/conftest.py already searches every raw log record of the run
(before any redaction); this one covers what leaves the process: the JSON formatter's output,
with tracebacks and extra fields, and a flow that includes a refresh of an expired access token
and a disconnect (revocation at Google), where tokens are handled most.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import quote

import pytest

from gateway.observability.logs import make_handler
from tests.support.availability import at, call, day, event, sync, z
from tests.support.stack import ALICE, ALICE_SUB, Stack, issued_secrets


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = make_handler("json", out)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield out
    finally:
        root.removeHandler(handler)


def _spellings(secret: str) -> set[str]:
    """The secret as it could appear in a JSON line: as is and JSON-escaped."""
    return {secret, json.dumps(secret)[1:-1]}


async def test_no_token_in_any_json_log_line_of_the_whole_flow(
    stack: Stack, json_log: io.StringIO
) -> None:
    result = await stack.connect(ALICE, user_id="log-scan")
    integration_id = result["integration_id"]
    d = day(5)
    event(stack, ALICE, at(d, "10:00"), at(d, "11:00"))
    await sync(stack, integration_id)
    window = {"time_min": z(at(d, "08:00")), "time_max": z(at(d, "18:00"))}
    cached = await call(stack, "GET", f"/v1/integrations/{integration_id}/freebusy", params=window)
    assert cached.status == 200 and cached.body["busy"], cached.body
    slots = await call(
        stack,
        "POST",
        "/v1/slots",
        json={
            "integration_ids": [integration_id],
            "mode": "all",
            "duration_minutes": 30,
            "time_zone": "UTC",
            **window,
        },
    )
    assert slots.status == 200 and slots.body["slots"], slots.body

    # Google's clock moves past the access token's life: the gateway's next call is refused
    # with 401 and it refreshes, then goes on.
    refreshes = stack.google.inspector.token_calls_for(ALICE_SUB, "refresh_token")
    stack.google.advance_clock(timedelta(hours=2).total_seconds())
    event(stack, ALICE, at(d, "14:00"), at(d, "15:00"))
    await sync(stack, integration_id)
    assert stack.google.inspector.token_calls_for(ALICE_SUB, "refresh_token") == refreshes + 1
    live = await call(
        stack,
        "GET",
        f"/v1/integrations/{integration_id}/freebusy",
        params={**window, "max_staleness_s": "0"},
    )
    assert live.status == 200 and len(live.body["busy"]) == 2, live.body

    gone = await call(stack, "DELETE", f"/v1/integrations/{integration_id}")
    assert gone.status in (200, 202), gone.body
    assert stack.google.inspector.requests(endpoint="revoke"), "the grant was not revoked"

    lines = json_log.getvalue().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert len(records) > 15
    secrets = issued_secrets(stack.google) | {stack.api_key, stack.other_tenant_key}
    assert len(secrets) >= 5  # codes, access tokens (two), refresh token, client secret
    leaks = [
        (secret[:6] + "...", line[:100])
        for line in lines
        for secret in secrets
        for spelled in _spellings(secret)
        if spelled in line
    ]
    assert not leaks, leaks

    access = [r for r in records if r["logger"] == "aiohttp.access"]
    paths = {r["message"].split()[1] for r in access}
    assert "/oauth/google/callback" in paths  # logged without its code and state
    assert f"/v1/integrations/{integration_id}" in paths
    # Every access line names its request, as the answer's X-Request-ID did.
    assert all(str(r["request_id"]).startswith("req_") for r in access), access[:3]


async def test_debug_logs_name_no_calendar_owner(stack: Stack, json_log: io.StringIO) -> None:
    """Finding 5 of issue 14: at DEBUG, googleapiclient logged each request URL, whose path
    names the calendar by its owner's email."""
    result = await stack.connect(ALICE, user_id="email-scan")
    event(stack, ALICE, at(day(3), "10:00"), at(day(3), "11:00"))
    await sync(stack, result["integration_id"])
    text = json_log.getvalue()
    assert "URL being requested" not in text
    once = quote(ALICE, safe="")
    for spelled in (ALICE, once, quote(once, safe="")):
        assert spelled.lower() not in text.lower(), spelled
