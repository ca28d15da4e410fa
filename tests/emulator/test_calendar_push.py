"""Push notifications delivered over real HTTP to a webhook receiver in the test."""

from __future__ import annotations

import email.utils

from emulator.calendar_store import Calendar, CalendarStore
from emulator.push import PushDispatcher
from tests.emulator.calendar_support import Api, Receiver, error_of, timed
from tests.support.emulator import START_EPOCH_S, RunningEmulator


async def watch(
    api: Api, receiver: Receiver, channel_id: str = "chan-1", **extra: object
) -> dict[str, str]:
    status, body = await api.call(
        "POST",
        "calendars/primary/events/watch",
        json={"id": channel_id, "type": "web_hook", "address": receiver.url, **extra},
    )
    assert status == 200, body
    return dict(body)


def change(store: CalendarStore, cal: Calendar, summary: str) -> str:
    """An edit made on Google's side (as the user in Google Calendar would)."""
    return store.insert_event(
        cal, timed("2026-11-24T09:00:00+01:00", "2026-11-24T10:00:00+01:00", summary=summary)
    ).id


async def test_watch_sends_sync_then_exists_with_google_headers(
    api: Api, receiver: Receiver, store: CalendarStore, alice_cal: Calendar, push: PushDispatcher
) -> None:
    channel = await watch(
        api, receiver, token="secret-ish", expiration=str(int(START_EPOCH_S * 1000) + 3_600_000)
    )
    assert channel["kind"] == "api#channel"
    assert isinstance(channel["expiration"], str) and channel["expiration"] == str(
        int(START_EPOCH_S * 1000) + 3_600_000
    )
    assert channel["resourceUri"].endswith("/calendar/v3/calendars/primary/events?alt=json")
    first = (await receiver.wait_for(1))[0]
    assert first["X-Goog-Resource-State"] == "sync"
    assert first["X-Goog-Channel-ID"] == "chan-1"
    assert first["X-Goog-Resource-ID"] == channel["resourceId"]
    assert first["X-Goog-Channel-Token"] == "secret-ish"
    expires = email.utils.parsedate_to_datetime(first["X-Goog-Channel-Expiration"])
    assert expires.timestamp() == START_EPOCH_S + 3600
    assert first["X-Goog-Channel-Expiration"].endswith(" GMT")

    change(store, alice_cal, "one")
    status, _ = await api.call(
        "POST",
        "calendars/primary/events",
        json=timed("2026-11-24T11:00:00+01:00", "2026-11-24T12:00:00+01:00"),
    )
    assert status == 200
    got = await receiver.wait_for(3)
    assert [h["X-Goog-Resource-State"] for h in got] == ["sync", "exists", "exists"]
    numbers = [int(h["X-Goog-Message-Number"]) for h in got]
    assert numbers == sorted(numbers) and len(set(numbers)) == 3
    assert receiver.bodies == [b"", b"", b""]


async def test_watch_without_expiration_lives_about_a_week(api: Api, receiver: Receiver) -> None:
    channel = await watch(api, receiver)
    assert int(channel["expiration"]) == int(START_EPOCH_S * 1000) + 604_799_000
    assert "token" not in channel
    assert "X-Goog-Channel-Token" not in (await receiver.wait_for(1))[0]


async def test_drop_and_duplicate_faults(
    api: Api, receiver: Receiver, store: CalendarStore, alice_cal: Calendar, push: PushDispatcher
) -> None:
    await watch(api, receiver)
    await receiver.wait_for(1)
    store.push_faults.drop_next = 1
    change(store, alice_cal, "lost")
    store.push_faults.duplicate_next = 1
    change(store, alice_cal, "twice")
    await push.drain()
    got = await receiver.wait_for(3)
    assert len(got) == 3
    assert got[1]["X-Goog-Message-Number"] == got[2]["X-Goog-Message-Number"], "a duplicate"
    dropped = [d for d in push.deliveries if not d.delivered]
    assert len(dropped) == 1 and int(got[1]["X-Goog-Message-Number"]) > dropped[0].message_number


async def test_stop_ends_deliveries_and_unknown_stop_is_404(
    api: Api, receiver: Receiver, store: CalendarStore, alice_cal: Calendar, push: PushDispatcher
) -> None:
    channel = await watch(api, receiver)
    await receiver.wait_for(1)
    status, body = await api.call(
        "POST", "channels/stop", json={"id": channel["id"], "resourceId": channel["resourceId"]}
    )
    assert (status, body) == (204, None)
    change(store, alice_cal, "after stop")
    await push.drain()
    assert len(receiver.received) == 1
    status, err = await api.call(
        "POST", "channels/stop", json={"id": channel["id"], "resourceId": channel["resourceId"]}
    )
    assert status == 404 and error_of(err)["reason"] == "notFound"


async def test_expired_channel_stops_delivering(
    api: Api,
    emulator: RunningEmulator,
    receiver: Receiver,
    store: CalendarStore,
    alice_cal: Calendar,
    push: PushDispatcher,
) -> None:
    await watch(api, receiver, expiration=str(int(START_EPOCH_S * 1000) + 60_000))
    await receiver.wait_for(1)
    emulator.state.advance_clock(61)
    change(store, alice_cal, "too late")
    await push.drain()
    assert len(receiver.received) == 1


async def test_watch_rejects_plain_http_unless_loopback_allowed(
    api: Api, store: CalendarStore, receiver: Receiver
) -> None:
    store.allow_insecure_loopback_webhooks = False
    status, err = await api.call(
        "POST",
        "calendars/primary/events/watch",
        json={"id": "c2", "type": "web_hook", "address": receiver.url},
    )
    assert status == 400 and error_of(err)["reason"] == "push.webhookUrlNotHttps"
    store.allow_insecure_loopback_webhooks = True
    status, err = await api.call(
        "POST",
        "calendars/primary/events/watch",
        json={"id": "c2", "type": "web_hook", "address": "http://example.com/hook"},
    )
    assert status == 400, "only loopback may be plain http"
    status, _ = await api.call(
        "POST",
        "calendars/primary/events/watch",
        json={"id": "c" * 65, "type": "web_hook", "address": receiver.url},
    )
    assert status == 400
    await watch(api, receiver, "dup")
    status, err = await api.call(
        "POST",
        "calendars/primary/events/watch",
        json={"id": "dup", "type": "web_hook", "address": receiver.url},
    )
    assert status == 400 and error_of(err)["reason"] == "channelIdNotUnique"
