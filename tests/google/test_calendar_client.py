"""The gateway's Calendar v3 client against the emulator over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.booking.idempotency import google_event_id
from gateway.google.calendar import CalendarClient
from gateway.google.errors import (
    DuplicateEvent,
    EventGone,
    GoogleNotFound,
    InsufficientScope,
    PreconditionFailed,
    RateLimited,
    RevokedOrInvalidToken,
    SyncTokenExpired,
    TransientGoogleError,
)
from tests.support.emulator import ALICE, CALENDAR, RunningEmulator

FREEBUSY_ONLY = "https://www.googleapis.com/auth/calendar.events.freebusy"
OWNED = "https://www.googleapis.com/auth/calendar.events.owned"
QUOTA_USER = "int_0123456789abcdef01234567"


class Tokens:
    """A TokenSource over the emulator: counts refreshes like the TokenManager would do one."""

    def __init__(self, emulator: RunningEmulator, scopes: tuple[str, ...] = (CALENDAR,)) -> None:
        self._emulator = emulator
        self._scopes = scopes
        self.token = emulator.token_for(ALICE, scopes)
        self.refreshes: list[str] = []

    async def access_token(self) -> str:
        return self.token

    async def refreshed_token(self, stale: str) -> str:
        self.refreshes.append(stale)
        self.token = self._emulator.token_for(ALICE, self._scopes)
        return self.token


class DeadTokens:
    """A grant Google no longer honours: every token it gives is refused."""

    def __init__(self) -> None:
        self.refreshes = 0

    async def access_token(self) -> str:
        return "ya29.revoked-token"

    async def refreshed_token(self, stale: str) -> str:
        self.refreshes += 1
        return "ya29.still-revoked"


@pytest.fixture
async def client(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> AsyncIterator[CalendarClient]:
    yield await CalendarClient.create(http, emulator.url("/calendar/v3/"))


def _event(event_id: str | None, start: str, end: str) -> dict[str, object]:
    body: dict[str, object] = {"start": {"dateTime": start}, "end": {"dateTime": end}}
    if event_id:
        body["id"] = event_id
    return body


async def test_full_then_incremental_sync_across_short_and_empty_pages(
    emulator: RunningEmulator, client: CalendarClient
) -> None:
    store = emulator.state.calendars
    cal = store.ensure_user(ALICE.email)
    for i in range(7):
        store.insert_event(
            cal,
            _event(
                f"seed{i:04d}", f"2026-11-2{i % 5 + 3}T10:00:00Z", f"2026-11-2{i % 5 + 3}T11:00:00Z"
            ),
        )
    store.max_page_items = 3
    store.empty_page_every = 2
    tokens = Tokens(emulator)

    pages = [p async for p in client.event_pages(tokens, QUOTA_USER, "primary", showDeleted=True)]
    ids = [e["id"] for p in pages for e in p.get("items", [])]
    assert sorted(ids) == [f"seed{i:04d}" for i in range(7)]
    assert any(not p.get("items") for p in pages), "the emulator served an empty page"
    assert [("nextSyncToken" in p) for p in pages] == [False] * (len(pages) - 1) + [True]

    store.delete_event(cal, "seed0001")
    store.insert_event(cal, _event("late0001", "2026-11-30T10:00:00Z", "2026-11-30T11:00:00Z"))
    sync_token = pages[-1]["nextSyncToken"]
    delta = [
        e
        async for p in client.event_pages(tokens, QUOTA_USER, "primary", syncToken=sync_token)
        for e in p.get("items", [])
    ]
    assert {(e["id"], e["status"]) for e in delta} == {
        ("seed0001", "cancelled"),
        ("late0001", "confirmed"),
    }


async def test_invalidated_sync_token_is_sync_token_expired(
    emulator: RunningEmulator, client: CalendarClient
) -> None:
    tokens = Tokens(emulator)
    page = await client.list_events(tokens, QUOTA_USER, "primary")
    emulator.state.calendars.invalidate_sync_tokens(ALICE.email)
    with pytest.raises(SyncTokenExpired) as info:
        await client.list_events(tokens, QUOTA_USER, "primary", syncToken=page["nextSyncToken"])
    assert info.value.google_status == 410
    assert info.value.google_error == "fullSyncRequired"


async def test_writes_and_their_google_errors(
    emulator: RunningEmulator, client: CalendarClient
) -> None:
    tokens = Tokens(emulator)
    body = _event("gvbooking0001", "2026-11-24T15:00:00Z", "2026-11-24T15:30:00Z")
    created = await client.insert_event(tokens, QUOTA_USER, "primary", body)
    assert created["id"] == "gvbooking0001"
    with pytest.raises(DuplicateEvent):
        await client.insert_event(tokens, QUOTA_USER, "primary", body)

    patched = await client.patch_event(
        tokens,
        QUOTA_USER,
        "primary",
        "gvbooking0001",
        {"summary": "Demo"},
        if_match=created["etag"],
    )
    assert patched["etag"] != created["etag"]
    with pytest.raises(PreconditionFailed):
        await client.patch_event(
            tokens,
            QUOTA_USER,
            "primary",
            "gvbooking0001",
            {"summary": "x"},
            if_match=created["etag"],
        )

    await client.delete_event(tokens, QUOTA_USER, "primary", "gvbooking0001")
    with pytest.raises(EventGone):
        await client.delete_event(tokens, QUOTA_USER, "primary", "gvbooking0001")
    with pytest.raises(GoogleNotFound):
        await client.get_event(tokens, QUOTA_USER, "primary", "neverseen0001")


async def test_freebusy_and_watch(emulator: RunningEmulator, client: CalendarClient) -> None:
    tokens = Tokens(emulator)
    await client.insert_event(
        tokens, QUOTA_USER, "primary", _event(None, "2026-11-24T09:00:00Z", "2026-11-24T10:00:00Z")
    )
    answer = await client.freebusy(
        tokens,
        QUOTA_USER,
        time_min="2026-11-24T00:00:00Z",
        time_max="2026-11-25T00:00:00Z",
        calendar_ids=[ALICE.email],
    )
    assert answer["calendars"][ALICE.email]["busy"] == [
        {"start": "2026-11-24T09:00:00Z", "end": "2026-11-24T10:00:00Z"}
    ]

    channel = await client.watch_events(
        tokens,
        QUOTA_USER,
        "primary",
        channel_id="chan-1",
        address="https://gateway.example.com/webhooks/google/calendar",
        token="per-channel-secret",
    )
    assert channel["id"] == "chan-1"
    assert "chan-1" in emulator.state.calendars.channels
    await client.stop_channel(
        tokens, QUOTA_USER, channel_id="chan-1", resource_id=channel["resourceId"]
    )
    assert "chan-1" not in emulator.state.calendars.channels


async def test_a_401_gets_one_refresh_then_gives_up(
    emulator: RunningEmulator, client: CalendarClient
) -> None:
    tokens = Tokens(emulator)
    stale = tokens.token
    emulator.state.advance_clock(emulator.state.access_token_lifetime_s + 1)
    page = await client.list_events(tokens, QUOTA_USER, "primary")
    assert page["kind"] == "calendar#events"
    assert tokens.refreshes == [stale]

    # A refresh that still yields a refused token: the client stops after one retry.
    dead = DeadTokens()
    with pytest.raises(RevokedOrInvalidToken):
        await client.list_events(dead, QUOTA_USER, "primary")
    assert dead.refreshes == 1


async def test_rate_limits_and_outages_are_transient(
    emulator: RunningEmulator, client: CalendarClient
) -> None:
    tokens = Tokens(emulator)
    emulator.state.inject_fault(status=403, reason="userRateLimitExceeded", endpoint="events.list")
    with pytest.raises(RateLimited) as info:
        await client.list_events(tokens, QUOTA_USER, "primary")
    assert isinstance(info.value, TransientGoogleError)
    assert info.value.google_error == "userRateLimitExceeded"
    emulator.state.inject_fault(status=503, endpoint="events.list")
    with pytest.raises(TransientGoogleError):
        await client.list_events(tokens, QUOTA_USER, "primary")
    assert (await client.list_events(tokens, QUOTA_USER, "primary"))["kind"] == "calendar#events"


async def test_least_privilege_scope_reads_busy_time_but_cannot_touch_others_events(
    emulator: RunningEmulator, client: CalendarClient
) -> None:
    tokens = Tokens(emulator, scopes=(FREEBUSY_ONLY, OWNED))
    page = await client.list_events(tokens, QUOTA_USER, "primary")
    assert page["kind"] == "calendar#events"
    readonly = Tokens(emulator, scopes=(FREEBUSY_ONLY,))
    with pytest.raises(InsufficientScope):
        await client.insert_event(
            readonly,
            QUOTA_USER,
            "primary",
            _event(None, "2026-11-24T09:00:00Z", "2026-11-24T10:00:00Z"),
        )


async def test_every_request_names_the_quota_user_and_nothing_unknown_is_sent(
    emulator: RunningEmulator, client: CalendarClient
) -> None:
    tokens = Tokens(emulator)
    await client.list_events(tokens, QUOTA_USER, "primary")
    await client.calendar_list(tokens, QUOTA_USER)
    calendar_requests = [
        r for r in emulator.state.inspector.requests() if r.path.startswith("/calendar/v3/")
    ]
    assert len(calendar_requests) == 2
    assert all(r.query.get("quotaUser") == QUOTA_USER for r in calendar_requests)
    before = len(emulator.state.inspector.requests())
    # The official library checks parameters against the discovery document before sending.
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        await client.list_events(tokens, QUOTA_USER, "primary", syncTokn="typo")
    assert len(emulator.state.inspector.requests()) == before


async def test_a_retried_booking_with_a_derived_id_creates_one_event(
    emulator: RunningEmulator, client: CalendarClient
) -> None:
    """The idempotency mechanism: Google accepts our derived id, and a retry is a 409."""
    tokens = Tokens(emulator)
    event_id = google_event_id("acme", "int_0123456789abcdef01234567", "order-42")
    body = {"id": event_id, **_event(None, "2026-11-24T15:00:00Z", "2026-11-24T15:30:00Z")}
    created = await client.insert_event(tokens, QUOTA_USER, "primary", body)
    assert created["id"] == event_id
    with pytest.raises(DuplicateEvent):
        await client.insert_event(tokens, QUOTA_USER, "primary", body)
    page = await client.list_events(tokens, QUOTA_USER, "primary")
    assert [e["id"] for e in page["items"]] == [event_id]
