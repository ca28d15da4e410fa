"""Live Google calls on a caller's behalf, over real HTTP against the emulator: limited per API
key and per tenant (429 live_calls_limited with Retry-After, and Google never asked), and
identical live questions answered by one Google call, never across tenants, never for an
integration that was disconnected."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.availability.intervals import Interval
from gateway.availability.service import AvailabilityService
from gateway.errors import TooManyRequests
from gateway.google.calendar import CalendarClient
from gateway.http.appkeys import INTEGRATIONS_KEY, SYNC_KEY, TOKENS_KEY
from gateway.livecalls import LiveCallLimits, SharedAnswers, caller_bound
from tests.support.availability import (
    ALICE,
    at,
    call,
    connect,
    day,
    event,
    freebusy_calls,
    key_with,
    sync,
    z,
)
from tests.support.booking import book, slot
from tests.support.stack import EmulatorSecrets, Stack, start_stack


@pytest.fixture
async def limited(
    engine: AsyncEngine, database_url: str, tmp_path: Path, emulator_secrets: EmulatorSecrets
) -> AsyncIterator[Stack]:
    """The stack with two live calls a minute per API key."""
    async for running in start_stack(
        engine,
        database_url,
        tmp_path,
        emulator_secrets=emulator_secrets,
        live_calls_per_min_per_key=2,
        live_calls_per_min_per_tenant=100,
    ):
        yield running


def path(integration_id: str) -> str:
    return f"/v1/integrations/{integration_id}/freebusy"


def outside_horizon(days_back: int) -> dict[str, str]:
    """A window the synced copy does not cover (it keeps 30 days back): asked live."""
    d = day(-days_back)
    return {"time_min": z(at(d, "09:00")), "time_max": z(at(d, "17:00"))}


def refused(limit: str) -> float:
    return REGISTRY.get_sample_value("gateway_live_calls_refused_total", {"limit": limit}) or 0.0


async def test_a_burst_beyond_the_keys_bucket_is_429_and_google_is_not_asked(
    limited: Stack,
) -> None:
    stack = limited
    alice = await connect(stack, ALICE)
    await sync(stack, alice)
    for days_back in (40, 41):
        answer = await call(stack, "GET", path(alice), params=outside_horizon(days_back))
        assert answer.status == 200 and answer.body["source"] == "google", answer.body
    assert freebusy_calls(stack, ALICE) == 2
    before = refused("api_key")

    answer = await call(stack, "GET", path(alice), params=outside_horizon(42))
    assert answer.status == 429, answer.body
    assert answer.headers["Content-Type"].startswith("application/problem+json")
    assert answer.body["code"] == "live_calls_limited" and answer.body["limit"] == "api_key"
    assert int(answer.headers["Retry-After"]) == answer.body["retry_after_s"] >= 1
    assert freebusy_calls(stack, ALICE) == 2  # refused before Google
    assert refused("api_key") == before + 1
    # In a batch, the refusal is that item's problem.
    batch = await call(
        stack, "POST", "/v1/freebusy", json={"integration_ids": [alice], **outside_horizon(43)}
    )
    assert batch.status == 200, batch.body
    [item] = batch.body["results"]
    assert item["problem"]["code"] == "live_calls_limited" and item["problem"]["status"] == 429
    assert freebusy_calls(stack, ALICE) == 2

    # The synced copy still answers: only live calls are limited.
    d = day(7)
    cached = await call(
        stack, "GET", path(alice), params={"time_min": z(d), "time_max": z(d + timedelta(days=1))}
    )
    assert cached.status == 200 and cached.body["source"] == "cache"
    # Another key of the tenant has a bucket of its own.
    other_key = await key_with(stack, "calendar:read")
    other = await call(stack, "GET", path(alice), key=other_key, params=outside_horizon(42))
    assert other.status == 200 and other.body["source"] == "google"
    assert freebusy_calls(stack, ALICE) == 3


async def test_the_bucket_refills_with_the_clock(stack: Stack) -> None:
    """The service with its client behind limits on an injected clock: no sleeping."""
    now = [1000.0]
    limits = LiveCallLimits(per_key_per_min=1, per_tenant_per_min=10, clock=lambda: now[0])
    client = await CalendarClient.create(
        stack.http, stack.settings.google_calendar_api_url, before_send=limits.admit
    )
    service = AvailabilityService(
        sync=stack.app[SYNC_KEY], client=client, tokens=stack.app[TOKENS_KEY]
    )
    alice_id = await connect(stack, ALICE)
    await sync(stack, alice_id)
    alice = await stack.app[INTEGRATIONS_KEY].get_by_id(alice_id)
    assert alice is not None

    def window(days_back: int) -> Interval:
        d = day(-days_back)
        return Interval(at(d, "09:00"), at(d, "17:00"))

    hour = timedelta(hours=1)
    with caller_bound("acme", "key1"):
        first = await service.freebusy(alice, window(40), max_staleness=hour)
        assert first.source == "google"
        with pytest.raises(TooManyRequests) as limited:
            await service.freebusy(alice, window(41), max_staleness=hour)
        assert limited.value.headers["Retry-After"] == "60"
        assert freebusy_calls(stack, ALICE) == 1
        now[0] += 59
        with pytest.raises(TooManyRequests):
            await service.freebusy(alice, window(41), max_staleness=hour)
        now[0] += 1
        again = await service.freebusy(alice, window(41), max_staleness=hour)
        assert again.source == "google"
    assert freebusy_calls(stack, ALICE) == 2


async def test_two_identical_live_questions_make_one_google_call(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    await sync(stack, alice)
    d = day(-40)
    event(stack, ALICE, at(d, "10:00"), at(d, "11:00"))
    first = await call(stack, "GET", path(alice), params=outside_horizon(40))
    second = await call(stack, "GET", path(alice), params=outside_horizon(40))
    assert first.status == second.status == 200
    assert second.body["source"] == "google" and second.body["busy"] == first.body["busy"]
    assert second.body["as_of"] == first.body["as_of"]  # when Google answered, not now
    assert freebusy_calls(stack, ALICE) == 1
    # A caller who wants it fresher than the kept answer is asked for again...
    fresh = await call(
        stack, "GET", path(alice), params={**outside_horizon(40), "max_staleness_s": "0"}
    )
    assert fresh.status == 200 and fresh.body["as_of"] > first.body["as_of"]
    assert freebusy_calls(stack, ALICE) == 2
    # ... and so is another window.
    await call(stack, "GET", path(alice), params=outside_horizon(41))
    assert freebusy_calls(stack, ALICE) == 3


async def connect_other_tenant(stack: Stack, email: str) -> str:
    session = await stack.start_connect("u-other", login_hint=email, key=stack.other_tenant_key)
    back = await stack.browser_get(await stack.browser_get(session["connect_url"]))
    found = {k: v[0] for k, v in parse_qs(urlsplit(back).query).items()}
    assert found["status"] == "connected", found
    return found["integration_id"]


async def test_tenants_never_share_an_answer(stack: Stack) -> None:
    """The same Google account connected under two tenants: each asks Google itself."""
    ours = await connect(stack, ALICE)
    theirs = await connect_other_tenant(stack, ALICE)
    question = outside_horizon(40)
    a = await call(stack, "GET", path(ours), params=question)
    b = await call(stack, "GET", path(theirs), params=question, key=stack.other_tenant_key)
    again = await call(stack, "GET", path(ours), params=question)
    assert a.status == b.status == again.status == 200
    assert freebusy_calls(stack, ALICE) == 2  # one per tenant; the repeat was shared


async def test_a_disconnected_integration_is_never_answered_from_a_kept_answer(
    stack: Stack,
) -> None:
    alice = await connect(stack, ALICE)
    question = outside_horizon(40)
    assert (await call(stack, "GET", path(alice), params=question)).status == 200
    async with stack.http.delete(stack.url(f"/v1/integrations/{alice}"), headers=stack.auth()) as r:
        assert r.status == 200, await r.text()
    after = await call(stack, "GET", path(alice), params=question)
    assert after.status == 409 and after.body["code"] == "integration_inactive"


async def test_questions_in_flight_share_one_fetch() -> None:
    shared: SharedAnswers[str] = SharedAnswers(ttl=timedelta(0))
    release = asyncio.Event()
    fetches: list[int] = []

    async def fetch() -> str:
        fetches.append(1)
        await release.wait()
        return "answer"

    hour = timedelta(hours=1)
    one = asyncio.ensure_future(shared.get(("acme", "int_1"), fetch, max_age=hour))
    two = asyncio.ensure_future(shared.get(("acme", "int_1"), fetch, max_age=hour))
    other = asyncio.ensure_future(shared.get(("globex", "int_1"), fetch, max_age=hour))
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(one, two, other)
    assert [r[0] for r in results] == ["answer"] * 3
    assert results[0][1] == results[1][1]
    assert len(fetches) == 2  # one per tenant
    # ttl 0: once answered, nothing is kept.
    await shared.get(("acme", "int_1"), fetch, max_age=hour)
    assert len(fetches) == 3


async def test_a_failed_fetch_is_not_kept() -> None:
    shared: SharedAnswers[str] = SharedAnswers(ttl=timedelta(seconds=5))
    calls: list[int] = []

    async def failing() -> str:
        calls.append(1)
        raise RuntimeError("google down")

    for _ in range(2):
        with pytest.raises(RuntimeError):
            await shared.get("q", failing, max_age=timedelta(hours=1))
    assert len(calls) == 2


async def test_a_booking_drops_the_kept_answer_of_its_integration(stack: Stack) -> None:
    """A live answer kept from before a booking is not served after it."""
    alice = await connect(stack, ALICE)
    await sync(stack, alice)
    d = day(400)  # beyond the synced year ahead: asked live
    question = {"time_min": z(at(d, "09:00")), "time_max": z(at(d, "17:00"))}
    before = await call(stack, "GET", path(alice), params=question)
    assert before.status == 200 and before.body["busy"] == []
    booked = await book(stack, alice, {**slot(d), "if_free": False}, key="k-drop")
    assert booked.status == 201, booked.body
    after = await call(stack, "GET", path(alice), params=question)
    assert after.body["busy"] == [{"start": z(at(d, "10:00")), "end": z(at(d, "10:30"))}]
    assert freebusy_calls(stack, ALICE) == 2
