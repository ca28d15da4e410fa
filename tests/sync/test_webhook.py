"""`POST /webhooks/google/calendar` over real HTTP, on SQLite and PostgreSQL.

Forged notifications (unknown channel, wrong or missing token, wrong resource id, stopped
channel) are refused with 404, cause no Google call and change nothing; a new message requests
exactly one sync; repeated and older message numbers do nothing; malformed headers and bodies
are refused; the channel token never reaches a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, update

from emulator.calendar_store import Channel
from gateway.clock import utc_now
from gateway.db.schema import calendars, watch_channels
from gateway.sync.channel_store import STOPPING, Acceptance, ChannelRow
from gateway.sync.lease_store import ClaimOffer
from tests.support.hops import counted_begins, counted_hops
from tests.support.stack import LogCapture, Stack
from tests.sync.push_support import (
    Push,
    notify,
)

# Fixtures shared with the channel tests.

WEBHOOK = "/webhooks/google/calendar"


async def snapshot(stack: Stack) -> tuple[list[tuple[object, ...]], list[datetime | None]]:
    """Every channel row and every calendar's sync request: what a refused call must not
    change."""
    async with stack.engine.connect() as conn:
        rows = [tuple(r) for r in (await conn.execute(select(watch_channels))).all()]
        requests = list((await conn.execute(select(calendars.c.sync_requested_at))).scalars())
    return rows, requests


async def active_channel(h: Push) -> Channel:
    row = await h.open_verified()
    await h.clear_sync_request()
    return h.google_channels()[row.id]


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    capture = LogCapture()
    root = logging.getLogger()
    root.addHandler(capture)
    try:
        yield capture.lines
    finally:
        root.removeHandler(capture)


async def test_forged_notifications_are_refused_without_effect(
    h: Push, log_lines: list[str]
) -> None:
    channel = await active_channel(h)
    stack = h.stack
    next_number = channel.last_message_number + 10
    token = channel.token or ""
    flipped = ("B" if token[0] == "A" else "A") + token[1:]
    before = await snapshot(stack)
    since = stack.google.inspector.requests()[-1].seq
    forgeries = {
        "unknown channel": {"X-Goog-Channel-ID": "gwch-" + "0" * 32},
        "wrong token": {"X-Goog-Channel-Token": flipped},
        "token of another length": {"X-Goog-Channel-Token": "guess"},
        "wrong resource": {"X-Goog-Resource-ID": "a" * len(channel.resource_id)},
    }
    for what, override in forgeries.items():
        async with stack.http.post(
            stack.url(WEBHOOK),
            headers={
                "X-Goog-Channel-ID": channel.id,
                "X-Goog-Channel-Token": channel.token or "",
                "X-Goog-Resource-ID": channel.resource_id,
                "X-Goog-Resource-State": "exists",
                "X-Goog-Message-Number": str(next_number),
                **override,
            },
        ) as response:
            assert response.status == 404, what
            assert response.content_type == "application/problem+json"
            problem = await response.json()
            assert problem["code"] == "channel_not_found", what
            assert channel.token not in str(problem)
    assert await snapshot(stack) == before
    assert stack.google.inspector.requests(since_seq=since) == []
    # The genuine message still works afterwards.
    assert await notify(stack, channel, "exists", next_number) == 200
    assert await h.sync_requested_at() is not None
    assert token and all(token not in line for line in log_lines)
    assert any(channel.id in line for line in log_lines)  # the capture did see the webhook


async def test_a_notification_without_a_token_is_refused(h: Push) -> None:
    channel = await active_channel(h)
    before = await snapshot(h.stack)
    async with h.stack.http.post(
        h.stack.url(WEBHOOK),
        headers={
            "X-Goog-Channel-ID": channel.id,
            "X-Goog-Resource-ID": channel.resource_id,
            "X-Goog-Resource-State": "exists",
            "X-Goog-Message-Number": str(channel.last_message_number + 1),
        },
    ) as response:
        assert response.status == 404
    assert await snapshot(h.stack) == before


async def test_a_stopped_channel_is_refused_without_effect(h: Push) -> None:
    channel = await active_channel(h)
    await h.store.stop_integration(h.calendar.integration_id, STOPPING)  # as a disconnect does
    before = await snapshot(h.stack)
    since = h.stack.google.inspector.requests()[-1].seq
    assert await notify(h.stack, channel, "exists", channel.last_message_number + 1) == 404
    assert await snapshot(h.stack) == before
    assert h.stack.google.inspector.requests(since_seq=since) == []


async def test_one_sync_per_new_message_and_none_for_repeats(h: Push) -> None:
    channel = await active_channel(h)
    number = channel.last_message_number + 5
    assert await notify(h.stack, channel, "exists", number) == 200
    assert await h.sync_requested_at() is not None
    assert (await h.channel(channel.id)).last_message_number == number
    await h.clear_sync_request()
    # Google repeats a message, or an older one arrives late: acknowledged, no work.
    for late in (number, number - 1, 1):
        assert await notify(h.stack, channel, "exists", late) == 200
    assert await h.sync_requested_at() is None
    assert (await h.channel(channel.id)).last_message_number == number
    # not_exists is a change too.
    assert await notify(h.stack, channel, "not_exists", number + 1) == 200
    assert await h.sync_requested_at() is not None


async def lease_of(h: Push) -> tuple[object, object]:
    async with h.stack.engine.connect() as conn:
        row = (
            await conn.execute(
                select(calendars.c.lease_owner, calendars.c.sync_requested_at).where(
                    calendars.c.id == h.calendar.id
                )
            )
        ).one()
    return row.lease_owner, row.sync_requested_at


async def test_a_scheduler_with_a_free_slot_gets_the_calendar_in_the_notification_s_write(
    h: Push,
) -> None:
    """With a free sync slot offered, the notification's transaction leases the calendar to
    that scheduler (its sync starts at once) instead of requesting a sync; when the calendar
    may not be claimed (another process syncs it, or this scheduler already syncs the same
    account) the request is recorded as without an offer."""
    channel = await active_channel(h)
    row = await h.channel(channel.id)
    now = utc_now()
    offer = ClaimOffer("test-a", now + timedelta(minutes=1))
    number = channel.last_message_number

    def accept(offer: ClaimOffer) -> Awaitable[Acceptance]:
        nonlocal number
        number += 1
        return h.store.accept_message(
            row, resource_id=channel.resource_id, message_number=number, now=now, offer=offer
        )

    accepted = await accept(offer)
    assert accepted.accepted and accepted.claimed is not None
    assert accepted.claimed.id == h.calendar.id
    assert await lease_of(h) == ("test-a", None)  # leased, nothing left to request

    # Still leased (its sync runs): another offer cannot take it; the request waits for after.
    accepted = await accept(ClaimOffer("test-b", now + timedelta(minutes=1)))
    assert accepted.accepted and accepted.claimed is None
    owner, requested = await lease_of(h)
    assert owner == "test-a" and requested is not None

    # Free again, but the offering scheduler syncs this account already: a request.
    async with h.stack.engine.begin() as conn:
        await conn.execute(
            update(calendars)
            .where(calendars.c.id == h.calendar.id)
            .values(lease_owner=None, lease_until=None, sync_requested_at=None)
        )
    busy = ClaimOffer("test-a", now + timedelta(minutes=1), frozenset({h.integration_id}))
    accepted = await accept(busy)
    assert accepted.accepted and accepted.claimed is None
    owner, requested = await lease_of(h)
    assert owner is None and requested is not None


async def test_a_repeated_message_with_a_free_slot_claims_and_writes_nothing(h: Push) -> None:
    """With an offer, SQLite records the message and leases the calendar in ONE hop to the
    connection's thread (the channel's UPDATE runs in the claim's hop, and the claim only if
    that UPDATE changed the channel): a repeated or late message, or one for a stopped
    channel, must then neither claim nor request nor change the channel."""
    channel = await active_channel(h)
    now = utc_now()
    number = channel.last_message_number + 1

    def offer() -> ClaimOffer:
        return ClaimOffer("test-a", now + timedelta(minutes=1))

    async def free() -> None:
        async with h.stack.engine.begin() as conn:
            await conn.execute(
                update(calendars)
                .where(calendars.c.id == h.calendar.id)
                .values(lease_owner=None, lease_until=None, sync_requested_at=None)
            )

    row = await h.channel(channel.id)
    with counted_hops() as hops:
        accepted = await h.store.accept_message(
            row, resource_id=channel.resource_id, message_number=number, now=now, offer=offer()
        )
    assert accepted.accepted and accepted.claimed is not None
    assert await lease_of(h) == ("test-a", None)
    sqlite = h.stack.engine.dialect.name == "sqlite"
    assert hops == (["_run"] if sqlite else [])  # message, lease and COMMIT in one hop

    await free()
    before = await snapshot(h.stack)
    for late in (number, number - 1):
        repeated = await h.store.accept_message(
            row, resource_id=channel.resource_id, message_number=late, now=now, offer=offer()
        )
        assert not repeated.accepted and repeated.claimed is None
    assert await lease_of(h) == (None, None)
    assert await snapshot(h.stack) == before

    await h.store.stop_integration(h.calendar.integration_id, STOPPING)
    stopped = await h.store.accept_message(
        row, resource_id=channel.resource_id, message_number=number + 1, now=now, offer=offer()
    )
    assert not stopped.accepted and await lease_of(h) == (None, None)


async def test_a_sync_message_is_recorded_and_requested_in_one_hop(h: Push) -> None:
    """Google's `sync` message (every new channel's first, which comes while the calendar's
    first full sync runs) records the message and, for a calendar with a complete copy,
    requests a sync: on SQLite in ONE hop to the connection's thread, the request only if the
    channel's UPDATE changed it. For a calendar without a copy nothing is requested (its first
    full sync lists everything), and a repeated message changes nothing at all."""
    channel = await active_channel(h)
    now = utc_now()
    number = channel.last_message_number + 1

    async def version() -> int:
        return (await h.calendar_state())[0]

    async def sync_message(row: ChannelRow, number: int) -> Acceptance:
        return await h.store.accept_message(
            row, resource_id=channel.resource_id, message_number=number, now=now, sync_message=True
        )

    row = await h.channel(channel.id)
    sqlite = h.stack.engine.dialect.name == "sqlite"
    was = await version()
    with counted_hops() as hops:
        accepted = await sync_message(row, number)
    assert accepted == Acceptance(accepted=True, requested=True)
    assert hops == (["_run"] if sqlite else [])  # message, request and COMMIT in one hop
    assert (await lease_of(h))[1] is not None and await version() == was + 1
    assert (await h.channel(channel.id)).last_message_number == number

    # The same message again: not accepted, nothing written (the request stays as it was).
    before, was = await snapshot(h.stack), await version()
    repeated = await sync_message(row, number)
    assert not repeated.accepted
    assert await snapshot(h.stack) == before and await version() == was

    # A calendar without a complete copy: the message counts, no sync is requested. It is the
    # channel's UPDATE alone, no calendar row written (its first copy's switch moves the
    # version): on SQLite one hop, on PostgreSQL in AUTOCOMMIT (no BEGIN, no COMMIT).
    await h.clear_sync_request()
    await h.set_copy(None)
    row, was = await h.channel(channel.id), await version()
    assert row.calendar_copied is False
    with counted_hops() as hops, counted_begins() as begins:
        first = await sync_message(row, number + 1)
    assert first == Acceptance(accepted=True, requested=False)
    assert hops == (["_run_together"] if sqlite else [])  # alone, a group of one
    assert begins == []
    assert await lease_of(h) == (None, None) and await version() == was
    assert (await h.channel(channel.id)).last_message_number == number + 1

    # The copy committed after the channel was read without one: the sync is requested.
    stale = await h.channel(channel.id)
    await h.set_copy(1)
    late = await sync_message(stale, number + 2)
    assert late == Acceptance(accepted=True, requested=True)
    assert (await lease_of(h))[1] is not None


async def test_requests_coalesce_into_the_waiting_one(h: Push) -> None:
    channel = await active_channel(h)
    assert await notify(h.stack, channel, "exists", channel.last_message_number + 1) == 200
    first = await h.sync_requested_at()
    assert first is not None
    assert await notify(h.stack, channel, "exists", channel.last_message_number + 2) == 200
    assert await h.sync_requested_at() == first


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Goog-Channel-ID", ""),
        ("X-Goog-Channel-ID", "a" * 65),
        ("X-Goog-Channel-ID", "has space"),
        ("X-Goog-Resource-State", "deleted"),
        ("X-Goog-Message-Number", "twelve"),
        ("X-Goog-Message-Number", "0"),
        ("X-Goog-Message-Number", "9" * 20),
        ("X-Goog-Resource-ID", ""),
        ("X-Goog-Channel-Token", "t" * 257),
    ],
)
async def test_malformed_headers_are_refused(h: Push, header: str, value: str) -> None:
    channel = await active_channel(h)
    before = await snapshot(h.stack)
    status = await notify(
        h.stack, channel, "exists", channel.last_message_number + 1, **{header: value}
    )
    assert status == 400
    assert await snapshot(h.stack) == before


async def test_a_body_is_refused(h: Push) -> None:
    channel = await active_channel(h)
    async with h.stack.http.post(
        h.stack.url(WEBHOOK),
        headers={
            "X-Goog-Channel-ID": channel.id,
            "X-Goog-Channel-Token": channel.token or "",
            "X-Goog-Resource-ID": channel.resource_id,
            "X-Goog-Resource-State": "exists",
            "X-Goog-Message-Number": str(channel.last_message_number + 1),
        },
        data=b"x" * 2048,
    ) as response:
        assert response.status == 413
    assert await h.sync_requested_at() is None


async def test_the_webhook_needs_no_api_key_and_refuses_other_methods(push_stack: Stack) -> None:
    async with push_stack.http.get(push_stack.url(WEBHOOK)) as response:
        assert response.status == 405
    async with push_stack.http.post(
        push_stack.url(WEBHOOK),
        headers={
            "X-Goog-Channel-ID": "gwch-unknown",
            "X-Goog-Resource-ID": "r",
            "X-Goog-Resource-State": "sync",
            "X-Goog-Message-Number": "1",
        },
    ) as response:
        assert response.status == 404  # not 401: Google sends no API key
