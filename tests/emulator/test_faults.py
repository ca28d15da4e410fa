"""Scripted faults: the next N matching calls fail like Google, then service is normal again."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from emulator.routing import ENDPOINT_NAMERS_KEY
from tests.support.emulator import (
    ALICE,
    BOB,
    TEST_CLIENT_ID,
    TEST_CLIENT_SECRET,
    RunningEmulator,
)
from tests.support.processes import until

EVENTS = "/calendar/v3/calendars/primary/events"
FREEBUSY = "/calendar/v3/freeBusy"


async def refresh(
    emulator: RunningEmulator, http: aiohttp.ClientSession, refresh_token: str
) -> tuple[int, dict[str, Any]]:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": TEST_CLIENT_ID,
        "client_secret": TEST_CLIENT_SECRET,
    }
    async with http.post(emulator.url("/token"), data=form) as r:
        return r.status, await r.json()


async def call(
    emulator: RunningEmulator,
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    token: str,
    **kwargs: Any,
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with http.request(method, emulator.url(path), headers=headers, **kwargs) as r:
        is_json = r.content_type == "application/json"
        return r.status, (await r.json()) if is_json else await r.text()


def is_rate_limited(status: int, body: Any) -> bool:
    return status in (403, 429) and isinstance(body, dict) and "usageLimits" in str(body)


async def test_next_n_token_calls_fail_then_refresh_works_again(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    issued = emulator.issue(ALICE)
    assert issued.refresh_token
    emulator.state.inject_fault(status=429, times=2, endpoint="token")
    results = [await refresh(emulator, http, issued.refresh_token) for _ in range(3)]
    assert results[0] == (
        429,
        {"error": "rate_limit_exceeded", "error_description": "Rate Limit Exceeded"},
    )
    assert results[1][0] == 429
    assert results[2][0] == 200 and "access_token" in results[2][1]


@pytest.mark.parametrize(
    ("status", "reason", "message"),
    [
        (403, "rateLimitExceeded", "Rate Limit Exceeded"),
        (403, "userRateLimitExceeded", "User Rate Limit Exceeded"),
        (403, "quotaExceeded", "Calendar usage limits exceeded."),
        (429, "rateLimitExceeded", "Rate Limit Exceeded"),
    ],
)
async def test_calendar_rate_limits_use_googles_usage_limits_envelope(
    emulator: RunningEmulator,
    http: aiohttp.ClientSession,
    status: int,
    reason: str,
    message: str,
) -> None:
    token = emulator.token_for(ALICE)
    emulator.state.inject_fault(status=status, reason=reason, endpoint="events.list")
    got_status, body = await call(emulator, http, "GET", EVENTS, token)
    assert got_status == status
    assert body == {
        "error": {
            "errors": [{"domain": "usageLimits", "reason": reason, "message": message}],
            "code": status,
            "message": message,
        }
    }, "rate-limit bodies carry no `status`, as in the recorded 403"


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (500, "Backend Error"),
        (503, "The service is currently unavailable."),
    ],
)
async def test_server_errors(
    emulator: RunningEmulator,
    http: aiohttp.ClientSession,
    status: int,
    message: str,
) -> None:
    token = emulator.token_for(ALICE)
    emulator.state.inject_fault(status=status)
    got, body = await call(emulator, http, "POST", FREEBUSY, token, json={})
    assert got == status
    assert body["error"]["errors"][0]["reason"] == "backendError"
    assert body["error"]["message"] == message
    assert "status" not in body["error"]


async def test_fault_for_one_user_leaves_others_alone(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    alice, bob = emulator.issue(ALICE), emulator.issue(BOB)
    assert alice.refresh_token and bob.refresh_token
    emulator.state.inject_fault(status=503, user=BOB.email, times=1)
    assert (await refresh(emulator, http, alice.refresh_token))[0] == 200
    assert not is_rate_limited(*await call(emulator, http, "GET", EVENTS, alice.token))
    # Bob is recognised by refresh token here; by bearer token below.
    assert (await refresh(emulator, http, bob.refresh_token))[0] == 503
    emulator.state.inject_fault(status=429, user=BOB.sub)
    assert not is_rate_limited(*await call(emulator, http, "GET", EVENTS, alice.token))
    assert is_rate_limited(*await call(emulator, http, "GET", EVENTS, bob.token))


async def test_fault_for_one_endpoint_leaves_others_alone(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    token = emulator.token_for(ALICE)
    emulator.state.inject_fault(status=429, endpoint="events.list", times=2)
    assert not is_rate_limited(*await call(emulator, http, "POST", FREEBUSY, token, json={}))
    assert not is_rate_limited(*await call(emulator, http, "POST", EVENTS, token, json={}))
    assert is_rate_limited(*await call(emulator, http, "GET", EVENTS, token))
    # A path prefix and a glob work too.
    emulator.state.inject_fault(status=429, endpoint="/calendar/v3/freeBusy")
    assert is_rate_limited(*await call(emulator, http, "POST", FREEBUSY, token, json={}))
    emulator.state.inject_fault(status=403, reason="rateLimitExceeded", endpoint="events.*")
    assert is_rate_limited(*await call(emulator, http, "POST", EVENTS, token, json={}))
    # The second events.list fault is still waiting.
    assert is_rate_limited(*await call(emulator, http, "GET", EVENTS, token))
    assert not is_rate_limited(*await call(emulator, http, "GET", EVENTS, token))


async def test_hang_then_proceed(emulator: RunningEmulator, http: aiohttp.ClientSession) -> None:
    issued = emulator.issue(ALICE)
    assert issued.refresh_token
    emulator.state.inject_fault(delay_s=0.3, endpoint="token")
    started = time.monotonic()
    status, _ = await refresh(emulator, http, issued.refresh_token)
    assert status == 200
    assert time.monotonic() - started >= 0.3


async def test_hang_past_the_clients_timeout_then_fail(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    token = emulator.token_for(ALICE, ["openid"])
    emulator.state.inject_fault(delay_s=0.5, status=503, endpoint="userinfo")
    with pytest.raises(asyncio.TimeoutError):
        await call(emulator, http, "GET", "/v1/userinfo", token, timeout=aiohttp.ClientTimeout(0.1))
    assert (await call(emulator, http, "GET", "/v1/userinfo", token))[0] == 200

    # The abandoned request is logged as such once the server notices.
    async def both_logged() -> bool:
        return len(emulator.state.inspector.requests(endpoint="userinfo")) == 2

    await until(both_logged)
    statuses = [r.status for r in emulator.state.inspector.requests(endpoint="userinfo")]
    # 499 when the server cancels the abandoned handler, else the scripted 503 nobody read.
    assert sorted(statuses) in ([200, 499], [200, 503])


async def test_faults_over_the_control_api_and_never_on_it(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    token = emulator.token_for(ALICE)
    body = {"status": 429, "times": 3, "user": ALICE.email, "endpoint": "events.list"}
    async with http.post(emulator.url("/_emulator/faults"), json=body) as r:
        assert r.status == 201
        fault = await r.json()
    assert (fault["user"], fault["times"]) == (ALICE.sub, 3)
    assert is_rate_limited(*await call(emulator, http, "GET", EVENTS, token))
    async with http.get(emulator.url("/_emulator/faults")) as r:
        assert [f["times"] for f in await r.json()] == [2]
    async with http.delete(emulator.url(f"/_emulator/faults/{fault['fault_id']}")) as r:
        assert r.status == 200
    assert not is_rate_limited(*await call(emulator, http, "GET", EVENTS, token))

    emulator.state.inject_fault(status=500)  # matches everything except /_emulator/
    async with http.get(emulator.url("/_emulator/health")) as r:
        assert r.status == 200
    async with http.delete(emulator.url("/_emulator/faults")) as r:
        assert r.status == 200
    assert emulator.state.faults.pending() == []


@pytest.mark.parametrize(
    "body",
    [{}, {"status": 418}, {"status": 403, "reason": "tooMuchCoffee"}, {"status": 429, "times": 0}],
)
async def test_bad_fault_requests_are_refused(
    emulator: RunningEmulator, http: aiohttp.ClientSession, body: dict[str, Any]
) -> None:
    async with http.post(emulator.url("/_emulator/faults"), json=body) as r:
        assert r.status == 400
        assert "error" in await r.json()


async def test_calendar_calls_are_logged_by_endpoint_name_and_user(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    token = emulator.token_for(ALICE)
    await call(emulator, http, "GET", EVENTS, token)
    await call(emulator, http, "POST", FREEBUSY, token, json={})
    logged = emulator.state.inspector.requests(user=ALICE.sub)
    assert [r.endpoint for r in logged] == ["events.list", "freebusy.query"]


async def test_a_part_can_name_its_own_endpoints(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    def namer(request: web.Request) -> str | None:
        return "people.me" if request.path == "/v1/userinfo" else None

    emulator.app[ENDPOINT_NAMERS_KEY].insert(0, namer)  # the first namer with an answer wins
    token = emulator.token_for(ALICE, ["openid"])
    emulator.state.inject_fault(status=500, endpoint="people.me")
    assert (await call(emulator, http, "GET", "/v1/userinfo", token))[0] == 500
    assert (await call(emulator, http, "GET", "/v1/userinfo", token))[0] == 200


async def _insert(
    emulator: RunningEmulator,
    http: aiohttp.ClientSession,
    token: str,
    event_id: str,
    **kwargs: Any,
) -> tuple[int, Any]:
    body = {
        "id": event_id,
        "summary": "Intro call",
        "start": {"dateTime": "2030-01-07T10:00:00Z"},
        "end": {"dateTime": "2030-01-07T10:30:00Z"},
    }
    return await call(emulator, http, "POST", EVENTS, token, json=body, **kwargs)


async def test_drop_response_applies_the_call_and_never_answers(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    token = emulator.token_for(ALICE)
    emulator.state.inject_fault(drop_response=True, endpoint="events.insert")
    with pytest.raises(aiohttp.ClientConnectionError):
        await _insert(emulator, http, token, "dropped0001")
    # The event exists at Google all the same: a retry with the same id is a duplicate.
    status, body = await _insert(emulator, http, token, "dropped0001")
    assert status == 409 and body["error"]["errors"][0]["reason"] == "duplicate"
    status, body = await call(emulator, http, "GET", f"{EVENTS}/dropped0001", token)
    assert status == 200 and body["summary"] == "Intro call"
    logged = emulator.state.inspector.requests(endpoint="events.insert")
    assert [r.status for r in logged] == [0, 409]


async def test_apply_then_hang_holds_the_answer_back(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    token = emulator.token_for(ALICE)
    emulator.state.inject_fault(after_delay_s=5, endpoint="events.insert")
    with pytest.raises(asyncio.TimeoutError):
        await _insert(emulator, http, token, "hung000001", timeout=aiohttp.ClientTimeout(0.3))
    # Already applied while the answer is still held back.
    status, _ = await call(emulator, http, "GET", f"{EVENTS}/hung000001", token)
    assert status == 200


async def test_drop_response_over_the_control_api(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    body = {"drop_response": True, "endpoint": "events.insert", "after_delay_s": 0.1}
    async with http.post(emulator.url("/_emulator/faults"), json=body) as r:
        assert r.status == 201
        fault = await r.json()
    assert (fault["drop_response"], fault["after_delay_s"]) == (True, 0.1)
    token = emulator.token_for(ALICE)
    with pytest.raises(aiohttp.ClientConnectionError):
        await _insert(emulator, http, token, "dropped0002")
    # A status and "apply the call" contradict each other.
    refused = {"status": 503, "drop_response": True}
    async with http.post(emulator.url("/_emulator/faults"), json=refused) as r:
        assert r.status == 400
