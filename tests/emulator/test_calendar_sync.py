"""Incremental sync as a client lives it: a local copy built from a full sync and kept current
with sync tokens must equal the calendar, however writes interleave with paging."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.calendar_store import CalendarStore, ListQuery
from tests.emulator.calendar_support import Api, timed
from tests.support.emulator import ALICE

Op = tuple[str, int]


class Client:
    """A minimal sync client: full sync, then incremental syncs, with writes allowed to land
    between any two page requests (the `between_pages` hook)."""

    def __init__(self, store: CalendarStore, email: str) -> None:
        self.store = store
        self.cal = store.ensure_user(email)
        self.copy: dict[str, str] = {}
        self.token: str | None = None

    def sync(self, between_pages: list[Op], apply: Any) -> None:
        page_token: str | None = None
        while True:
            query = ListQuery(max_results=2, sync_token=self.token, page_token=page_token)
            page = self.store.list_events(self.cal, query)
            for item in page["items"]:
                if item["status"] == "cancelled":
                    self.copy.pop(item["id"], None)
                else:
                    self.copy[item["id"]] = item["summary"]
            if between_pages:
                apply(between_pages.pop(0))
            page_token = page.get("nextPageToken")
            if page_token is None:
                self.token = page["nextSyncToken"]
                return


def live(store: CalendarStore, email: str) -> dict[str, str]:
    cal = store.calendars[email]
    return {r.id: r.body["summary"] for r in cal.events.values() if not r.cancelled}


ops = st.lists(
    st.tuples(st.sampled_from(["insert", "patch", "delete", "sync"]), st.integers(0, 50)),
    min_size=1,
    max_size=30,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops, st.sampled_from([0, 2, 3]))
def test_local_copy_converges_whatever_the_interleaving(script: list[Op], empty_every: int) -> None:
    store = CalendarStore()
    store.rng = random.Random(5)
    store.empty_page_every = empty_every
    client = Client(store, ALICE.email)
    counter = [0]

    def apply(op: Op) -> None:
        kind, n = op
        ids = sorted(r.id for r in client.cal.events.values() if not r.cancelled)
        if kind == "insert" or not ids:
            counter[0] += 1
            body = timed(
                "2026-11-24T10:00:00+01:00", "2026-11-24T11:00:00+01:00", summary=f"v{counter[0]}"
            )
            store.insert_event(client.cal, body)
        elif kind == "patch":
            counter[0] += 1
            store.patch_event(client.cal, ids[n % len(ids)], {"summary": f"v{counter[0]}"})
        elif kind == "delete":
            store.delete_event(client.cal, ids[n % len(ids)])

    for _ in range(3):
        apply(("insert", 0))
    client.sync([], apply)
    pending = [op for op in script if op[0] != "sync"]
    # Writes land between pages of syncs, then a final quiet sync must see everything.
    while pending:
        client.sync([pending.pop(0), *([pending.pop(0)] if pending else [])], apply)
    client.sync([], apply)
    assert client.copy == live(store, ALICE.email)


async def test_multi_page_incremental_sync_over_http(api: Api, store: CalendarStore) -> None:
    cal = store.ensure_user(ALICE.email)
    ids = [
        store.insert_event(
            cal, timed("2026-11-24T10:00:00+01:00", "2026-11-24T11:00:00+01:00", summary="a")
        ).id
        for _ in range(3)
    ]
    _, full = await api.call("GET", "calendars/primary/events")
    for event_id in ids:
        store.patch_event(cal, event_id, {"summary": "b"})
    items, pages = await api.list_all(
        "calendars/primary/events", {"syncToken": full["nextSyncToken"], "maxResults": "1"}
    )
    assert len(pages) >= 3 and all("nextSyncToken" not in p for p in pages[:-1])
    assert sorted(i["id"] for i in items) == sorted(ids) and {i["summary"] for i in items} == {"b"}
    status, _body = await api.call(
        "GET", "calendars/primary/events", params={"pageToken": pages[0]["nextPageToken"]}
    )
    assert status == 400, "a page token belongs to the request that produced it"


async def test_calendar_id_may_be_the_percent_encoded_email(api: Api, store: CalendarStore) -> None:
    cal = store.ensure_user(ALICE.email)
    store.insert_event(
        cal, timed("2026-11-24T10:00:00+01:00", "2026-11-24T11:00:00+01:00", summary="x")
    )
    status, body = await api.call("GET", "calendars/alice%40example.com/events")
    assert status == 200 and len(body["items"]) == 1
