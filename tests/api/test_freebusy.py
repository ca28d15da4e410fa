"""GET /v1/integrations/{id}/freebusy and POST /v1/freebusy over real HTTP against the Google
emulator, on SQLite and PostgreSQL: cache or Google and saying which, merged and clipped busy
time, honest answers when Google fails, validation, scopes, tenants, inactive integrations."""

from __future__ import annotations

from datetime import datetime, timedelta

from gateway.clock import utc_now
from gateway.http.appkeys import INTEGRATIONS_KEY
from tests.support.availability import (
    ALICE,
    DAVE,
    FRANK,
    at,
    call,
    connect,
    day,
    event,
    freebusy_calls,
    key_with,
    rate_limit,
    sync,
    z,
)
from tests.support.stack import Stack


def path(integration_id: str) -> str:
    return f"/v1/integrations/{integration_id}/freebusy"


def window(base: datetime, start: str = "09:00", end: str = "17:00") -> dict[str, str]:
    return {"time_min": z(at(base, start)), "time_max": z(at(base, end))}


def spans(body: dict[str, object]) -> list[tuple[str, str]]:
    busy = body["busy"]
    assert isinstance(busy, list)
    return [(b["start"], b["end"]) for b in busy]


async def test_busy_is_merged_clipped_and_the_same_from_cache_and_google(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(7)
    event(stack, ALICE, at(d, "08:00"), at(d, "09:30"))  # starts before the window
    event(stack, ALICE, at(d, "10:00"), at(d, "11:00"))
    event(stack, ALICE, at(d, "10:30"), at(d, "11:30"))  # overlaps the one before
    event(stack, ALICE, at(d, "11:30"), at(d, "12:00"))  # touches it
    event(stack, ALICE, at(d, "13:00"), at(d, "14:00"), transparency="transparent")
    event(
        stack,
        ALICE,
        at(d, "14:00"),
        at(d, "15:00"),
        attendees=[{"email": ALICE, "self": True, "responseStatus": "declined"}],
    )
    event(stack, ALICE, at(d, "16:30"), at(d, "18:00"))  # ends after the window
    [calendar_id] = await sync(stack, alice)

    cached = await call(stack, "GET", path(alice), params=window(d))
    assert cached.status == 200, cached.body
    assert cached.headers["Cache-Control"] == "no-store"
    expected = [
        (z(at(d, "09:00")), z(at(d, "09:30"))),
        (z(at(d, "10:00")), z(at(d, "12:00"))),
        (z(at(d, "16:30")), z(at(d, "17:00"))),
    ]
    assert spans(cached.body) == expected
    assert cached.body["source"] == "cache" and cached.body["complete"] is True
    assert cached.body["integration_id"] == alice
    assert (cached.body["time_min"], cached.body["time_max"]) == (
        z(at(d, "09:00")),
        z(at(d, "17:00")),
    )
    assert list(cached.body["calendars"]) == [calendar_id]
    assert calendar_id.startswith("cal_")
    assert cached.body["calendars"][calendar_id]["state"] == "fresh"
    assert freebusy_calls(stack) == 0

    live = await call(stack, "GET", path(alice), params={**window(d), "max_staleness_s": "0"})
    assert live.status == 200, live.body
    assert live.body["source"] == "google" and live.body["complete"] is True
    assert spans(live.body) == expected
    assert freebusy_calls(stack, ALICE) == 1
    assert ALICE not in str(live.body)  # our calendar ids, never the address


async def test_a_stale_cache_is_refreshed_from_google_and_says_so(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(8)
    await sync(stack, alice)
    # Booked "in Google Calendar" after the last sync: the copy does not know it yet.
    event(stack, ALICE, at(d, "10:00"), at(d, "11:00"))

    cached = await call(stack, "GET", path(alice), params=window(d))
    assert cached.body["source"] == "cache" and spans(cached.body) == []
    as_of = datetime.fromisoformat(cached.body["as_of"])
    assert timedelta(0) <= utc_now() - as_of < timedelta(minutes=10)

    live = await call(stack, "GET", path(alice), params={**window(d), "max_staleness_s": "0"})
    assert live.body["source"] == "google"
    assert spans(live.body) == [(z(at(d, "10:00")), z(at(d, "11:00")))]
    assert datetime.fromisoformat(live.body["as_of"]) >= as_of


async def test_a_window_outside_the_synced_horizon_is_asked_live(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    await sync(stack, alice)
    long_ago = day(-40)  # the horizon keeps 30 days back
    event(stack, ALICE, at(long_ago, "10:00"), at(long_ago, "11:00"))
    answer = await call(stack, "GET", path(alice), params=window(long_ago))
    assert answer.status == 200, answer.body
    assert answer.body["source"] == "google" and answer.body["complete"] is True
    assert spans(answer.body) == [(z(at(long_ago, "10:00")), z(at(long_ago, "11:00")))]


async def test_google_failing_with_a_stale_copy_answers_the_copy_honestly(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(9)
    event(stack, ALICE, at(d, "09:00"), at(d, "10:00"))
    [calendar_id] = await sync(stack, alice)
    event(stack, ALICE, at(d, "12:00"), at(d, "13:00"))  # unknown to the copy
    rate_limit(stack, ALICE)

    answer = await call(stack, "GET", path(alice), params={**window(d), "max_staleness_s": "0"})
    assert answer.status == 200, answer.body
    assert answer.body["complete"] is False
    assert answer.body["source"] == "cache"
    assert spans(answer.body) == [(z(at(d, "09:00")), z(at(d, "10:00")))]
    state = answer.body["calendars"][calendar_id]
    assert state["state"] == "stale" and state["error"] == "rate_limited"
    assert state["as_of"] == answer.body["as_of"] is not None


async def test_google_failing_without_any_copy_is_503_with_retry_after(stack: Stack) -> None:
    frank = await connect(stack, FRANK)
    rate_limit(stack, FRANK)
    answer = await call(stack, "GET", path(frank), params=window(day(7)))
    assert answer.status == 503, answer.body
    assert answer.body["code"] == "rate_limited"
    assert int(answer.headers["Retry-After"]) >= 1
    # Once Google answers again, so do we (nothing was cached as "free" meanwhile).
    again = await call(stack, "GET", path(frank), params=window(day(7)))
    assert again.status == 200 and again.body["source"] == "google"


async def test_an_unsynced_integration_is_answered_live(stack: Stack) -> None:
    dave = await connect(stack, DAVE)  # grants free/busy only
    d = day(7)
    event(stack, DAVE, at(d, "15:00"), at(d, "16:00"))
    answer = await call(stack, "GET", path(dave), params=window(d))
    assert answer.status == 200, answer.body
    assert answer.body["source"] == "google" and answer.body["complete"] is True
    assert spans(answer.body) == [(z(at(d, "15:00")), z(at(d, "16:00")))]
    [(calendar_id, state)] = answer.body["calendars"].items()
    assert calendar_id.startswith("cal_") and state["state"] == "fresh"


async def test_invalid_queries_are_422_and_ask_google_nothing(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(7)
    bad = [
        ({"time_min": "2026-12-01T09:00:00", "time_max": z(at(d, "10:00"))}, "time_min"),
        ({"time_min": z(at(d, "10:00")), "time_max": z(at(d, "09:00"))}, "time_max"),
        ({"time_min": z(d), "time_max": z(d + timedelta(days=63))}, "time_max"),
        ({**window(d), "max_staleness_s": "-1"}, "max_staleness_s"),
        ({**window(d), "max_staleness_s": "86401"}, "max_staleness_s"),
        ({**window(d), "calendar": "primary"}, "calendar"),
        ({"time_min": z(d)}, "time_max"),
    ]
    for params, field in bad:
        answer = await call(stack, "GET", path(alice), params=params)
        assert answer.status == 422, (params, answer.body)
        assert answer.body["field"] == field, (params, answer.body)
    assert freebusy_calls(stack) == 0


async def test_scope_tenant_and_inactive_integrations(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    dave = await connect(stack, DAVE)
    params = window(day(7))
    no_read = await key_with(stack, "connections:read", "calendar:write")
    forbidden = await call(stack, "GET", path(alice), params=params, key=no_read)
    assert forbidden.status == 403 and forbidden.body["scope"] == "calendar:read"

    foreign = await call(stack, "GET", path(alice), params=params, key=stack.other_tenant_key)
    assert foreign.status == 404 and foreign.body["code"] == "integration_not_found"
    unknown = await call(stack, "GET", path("int_" + "0" * 24), params=params)
    assert unknown.status == 404 and unknown.body["code"] == "integration_not_found"

    await stack.app[INTEGRATIONS_KEY].mark_needs_reauth(alice, reason="invalid_grant", at=utc_now())
    reauth = await call(stack, "GET", path(alice), params=params)
    assert reauth.status == 409, reauth.body
    assert reauth.body["code"] == "integration_inactive"
    assert reauth.body["integration_status"] == "needs_reauth"

    gone = await call(stack, "DELETE", f"/v1/integrations/{dave}")
    assert gone.status == 200, gone.body
    disconnected = await call(stack, "GET", path(dave), params=params)
    assert disconnected.status == 409 and disconnected.body["integration_status"] == "disconnected"
    assert freebusy_calls(stack) == 0


# -- POST /v1/freebusy ------------------------------------------------------------------------


async def test_batch_answers_each_integration_in_order(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    dave = await connect(stack, DAVE)
    frank = await connect(stack, FRANK)
    d = day(7)
    event(stack, ALICE, at(d, "09:00"), at(d, "10:00"))
    event(stack, DAVE, at(d, "11:00"), at(d, "12:00"))
    await sync(stack, alice)
    await stack.app[INTEGRATIONS_KEY].mark_needs_reauth(frank, reason="invalid_grant", at=utc_now())
    unknown = "int_" + "f" * 24
    answer = await call(
        stack,
        "POST",
        "/v1/freebusy",
        json={"integration_ids": [dave, unknown, alice, frank], **window(d)},
    )
    assert answer.status == 200, answer.body
    results = answer.body["results"]
    assert [r["integration_id"] for r in results] == [dave, unknown, alice, frank]
    assert (results[0]["source"], spans(results[0])) == (
        "google",
        [(z(at(d, "11:00")), z(at(d, "12:00")))],
    )
    assert results[1]["problem"]["code"] == "integration_not_found"
    assert results[1]["problem"]["status"] == 404
    assert (results[2]["source"], spans(results[2])) == (
        "cache",
        [(z(at(d, "09:00")), z(at(d, "10:00")))],
    )
    assert results[3]["problem"]["code"] == "integration_inactive"
    assert results[3]["problem"]["status"] == 409
    assert results[3]["problem"]["integration_status"] == "needs_reauth"


async def test_batch_rate_limited_item_and_other_tenant(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    frank = await connect(stack, FRANK)
    d = day(7)
    await sync(stack, alice)
    rate_limit(stack, FRANK)
    answer = await call(
        stack, "POST", "/v1/freebusy", json={"integration_ids": [alice, frank], **window(d)}
    )
    assert answer.status == 200, answer.body
    ok, limited = answer.body["results"]
    assert ok["complete"] is True
    assert limited["problem"]["code"] == "rate_limited"
    assert limited["problem"]["retry_after_s"] >= 1

    foreign = await call(
        stack,
        "POST",
        "/v1/freebusy",
        json={"integration_ids": [alice, frank], **window(d)},
        key=stack.other_tenant_key,
    )
    assert foreign.status == 200
    assert [r["problem"]["code"] for r in foreign.body["results"]] == [
        "integration_not_found",
        "integration_not_found",
    ]
    assert "busy" not in str(foreign.body)


async def test_batch_validation_and_scope(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(7)
    too_many = [f"int_{n:024x}" for n in range(51)]
    bad = [
        ({"integration_ids": too_many, **window(d)}, "integration_ids"),
        ({"integration_ids": [], **window(d)}, "integration_ids"),
        ({"integration_ids": [alice, alice], **window(d)}, "integration_ids[1]"),
        ({"integration_ids": [alice], **window(d), "calendars": []}, "calendars"),
        (
            {"integration_ids": [alice], "time_min": "2026-12-01T09:00:00", "time_max": z(d)},
            "time_min",
        ),
        (
            {"integration_ids": [alice], "time_min": z(at(d, "10:00")), "time_max": z(d)},
            "time_max",
        ),
    ]
    for body, field in bad:
        answer = await call(stack, "POST", "/v1/freebusy", json=body)
        assert answer.status == 422, (body, answer.body)
        assert answer.body["field"] == field, answer.body
    no_read = await key_with(stack, "calendar:write")
    forbidden = await call(
        stack, "POST", "/v1/freebusy", json={"integration_ids": [alice], **window(d)}, key=no_read
    )
    assert forbidden.status == 403
    assert freebusy_calls(stack) == 0
