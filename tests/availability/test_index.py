"""The availability index as a data structure (no database): windows answered by bisection
equal the plain interval arithmetic, versions and floors refuse old reads, the memory budget
drops the least recently used calendars, and nothing is answered while it is not usable."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.availability.index import (
    ENTRY_OVERHEAD_BYTES,
    AvailabilityIndex,
    CalendarEntry,
    IntegrationEntry,
)
from gateway.availability.intervals import Interval, clip, merge
from gateway.availability.spans import intervals_of, to_us
from gateway.connections.model import Integration, Status
from gateway.db.notify import Change, parse
from gateway.sync.calendar_store import CalendarRow

T0 = datetime(2026, 12, 7, tzinfo=UTC)


def row(calendar_id: str = "cal_1", integration_id: str = "int_1") -> CalendarRow:
    return CalendarRow(
        id=calendar_id,
        integration_id=integration_id,
        tenant_id="acme",
        google_calendar_id="alice@example.com",
        time_zone="UTC",
        sync_token="t",
        active_generation=1,
        state="synced",
        last_success_at=T0,
        last_attempt_at=T0,
        last_error=None,
        horizon_start=T0 - timedelta(days=30),
        horizon_end=T0 + timedelta(days=365),
    )


def entry(
    calendar_id: str = "cal_1",
    version: int = 1,
    blocks: list[tuple[datetime, datetime]] | None = None,
    push_until_s: float | None = None,
    push_heard_at: datetime | None = None,
) -> CalendarEntry:
    return CalendarEntry.build(
        row(calendar_id),
        version,
        sync_requested_at=None,
        backoff_until=None,
        push_until_s=push_until_s,
        push_heard_at=push_heard_at,
        blocks=blocks or [],
    )


def integration_entry(
    version: int = 1, calendar_ids: tuple[str, ...] = ("cal_1",)
) -> IntegrationEntry:
    integration = Integration(
        id="int_1",
        tenant_id="acme",
        user_id="u-1",
        status=Status.ACTIVE,
        google_sub="1",
        google_email="alice@example.com",
        granted_scopes=frozenset(),
        created_at=T0,
        updated_at=T0,
    )
    return IntegrationEntry(integration, version, calendar_ids)


def usable(budget_bytes: int = 1 << 20) -> AvailabilityIndex:
    index = AvailabilityIndex(budget_bytes=budget_bytes)
    index.reset(usable=True)
    return index


minutes = st.integers(min_value=0, max_value=3 * 24 * 60)
spans = st.lists(st.tuples(minutes, st.integers(min_value=0, max_value=600)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(spans, minutes, st.integers(min_value=1, max_value=2 * 24 * 60))
def test_a_window_by_bisection_is_the_interval_arithmetic_of_the_database_path(
    raw: list[tuple[int, int]], start_min: int, length_min: int
) -> None:
    blocks = [(T0 + timedelta(minutes=s), T0 + timedelta(minutes=s + n)) for s, n in raw]
    window = Interval(
        T0 + timedelta(minutes=start_min), T0 + timedelta(minutes=start_min + length_min)
    )
    # The database path: blocks overlapping the window, clipped, merged.
    expected = clip(
        (Interval(s, e) for s, e in blocks if s < window.end and e > window.start), window
    )
    found = entry(blocks=blocks).busy_between(window.start, window.end)
    assert clip((Interval(s, e) for s, e in found), window) == expected
    assert merge(Interval(s, e) for s, e in found) == [Interval(s, e) for s, e in found]


@settings(max_examples=300, deadline=None)
@given(spans, minutes, st.integers(min_value=1, max_value=2 * 24 * 60), st.integers(0, 999_999))
def test_a_window_as_integers_is_the_interval_arithmetic_of_the_database_path(
    raw: list[tuple[int, int]], start_min: int, length_min: int, fraction_us: int
) -> None:
    """The hot path's spans (epoch microseconds) say what the datetime arithmetic says, for
    windows with a fraction of a second too."""
    blocks = [(T0 + timedelta(minutes=s), T0 + timedelta(minutes=s + n)) for s, n in raw]
    shift = timedelta(minutes=start_min, microseconds=fraction_us)
    window = Interval(T0 + shift, T0 + shift + timedelta(minutes=length_min))
    expected = clip((Interval(s, e) for s, e in blocks), window)
    found = entry(blocks=blocks).spans_between(to_us(window.start), to_us(window.end))
    assert intervals_of(found) == expected


def test_a_sub_second_edge_is_widened_to_busy_never_narrowed() -> None:
    half = timedelta(milliseconds=500)
    e = entry(blocks=[(T0 + half, T0 + timedelta(minutes=1) + half)])
    assert e.busy_between(T0, T0 + timedelta(hours=1)) == [
        (T0, T0 + timedelta(minutes=1, seconds=1))
    ]


def test_push_counts_until_the_channel_expires_or_goes_silent() -> None:
    e = entry(push_until_s=(T0 + timedelta(hours=3)).timestamp(), push_heard_at=T0)
    assert e.freshness(T0, 900).as_of == T0  # a live channel: current
    quiet = T0 + timedelta(minutes=10)
    assert e.freshness(quiet, 900).as_of == quiet  # heard from within GATEWAY_PUSH_TRUST_S
    silent = T0 + timedelta(minutes=20)
    assert e.freshness(silent, 900).push_active is True
    assert e.freshness(silent, 900).as_of == T0  # silent too long: the last successful sync
    later = T0 + timedelta(hours=4)
    assert e.freshness(later, 900).push_active is False
    assert e.freshness(later, 900).as_of == T0
    for moment in (T0, quiet, silent, later):  # the hot path's shortcut says the same
        assert e.as_of(moment, 900) == e.freshness(moment, 900).as_of


def test_nothing_is_held_or_answered_until_usable_and_after_a_reset() -> None:
    index = AvailabilityIndex(budget_bytes=1 << 20)
    assert not index.put_calendar(entry(), epoch=index.epoch)
    index.reset(usable=True)
    assert index.put_calendar(entry(), epoch=index.epoch)
    assert index.calendar("cal_1") is not None
    index.reset(usable=False)  # the LISTEN connection is lost
    assert index.calendar("cal_1") is None
    assert not index.put_calendar(entry(), epoch=index.epoch)


def test_a_read_from_before_a_reset_is_not_kept() -> None:
    index = usable()
    epoch = index.epoch
    index.reset(usable=True)  # the connection came back: changes may have been missed
    assert not index.put_calendar(entry(), epoch=epoch)


def test_a_change_drops_the_older_entry_and_refuses_reads_older_than_it() -> None:
    index = usable()
    index.put_calendar(entry(version=3), epoch=index.epoch)
    index.changed(Change("calendar", "cal_1", "int_1", 3))  # its own write, heard again
    assert index.calendar("cal_1") is not None
    index.changed(Change("calendar", "cal_1", "int_1", 4))
    assert index.calendar("cal_1") is None
    # A read that began before version 4 committed is not kept; one of version 4 is.
    assert not index.put_calendar(entry(version=3), epoch=index.epoch)
    assert index.put_calendar(entry(version=4), epoch=index.epoch)


def test_an_integration_change_drops_it_and_a_new_calendar_drops_its_list() -> None:
    index = usable()
    assert index.put_integration(integration_entry(version=1), epoch=index.epoch)
    index.changed(Change("calendar", "cal_2", "int_1", 1))  # a calendar it did not list
    assert index.integration("int_1") is None
    assert index.put_integration(integration_entry(version=1), epoch=index.epoch)
    index.changed(Change("integration", "int_1", None, 2))  # e.g. needs_reauth
    assert index.integration("int_1") is None
    assert not index.put_integration(integration_entry(version=1), epoch=index.epoch)


async def test_a_write_by_another_program_keeps_what_the_index_holds() -> None:
    # The CLI writes keys and the vault only; on SQLite the watcher also fires for this
    # process's own writes, which the index has already been told of.
    index = usable()
    index.put_calendar(entry(), epoch=index.epoch)
    index.put_integration(integration_entry(), epoch=index.epoch)
    await index.external_write()
    assert index.integration("int_1") is not None
    assert index.calendar("cal_1") is not None


def test_the_budget_drops_the_least_recently_used_calendar() -> None:
    blocks = [(T0 + timedelta(hours=k), T0 + timedelta(hours=k, minutes=30)) for k in range(100)]
    one = entry("cal_a", blocks=blocks).nbytes
    assert one == ENTRY_OVERHEAD_BYTES + 100 * 16
    index = usable(budget_bytes=2 * one)
    for name in ("cal_a", "cal_b"):
        assert index.put_calendar(entry(name, blocks=blocks), epoch=index.epoch)
    assert index.calendar("cal_a") is not None  # now the most recently used
    index.put_calendar(entry("cal_c", blocks=blocks), epoch=index.epoch)
    assert index.calendar("cal_b") is None
    assert index.calendar("cal_a") is not None and index.calendar("cal_c") is not None
    assert index.nbytes <= index.budget_bytes


def test_payloads_round_trip_and_unknown_ones_are_ignored() -> None:
    for change in (
        Change("calendar", "cal_1", "int_1", 7),
        Change("integration", "int_1", None, 2),
        Change("key", "0123abcd"),
        Change("fence", "x1"),
    ):
        assert parse(change.payload()) == change
    assert parse("z something new") is None
    assert parse("c cal_1 int_1 notanumber") is None


def test_a_change_keeps_the_old_arrays_for_a_reload_of_the_same_blocks_version() -> None:
    index = usable()
    blocks = [(T0, T0 + timedelta(hours=1))]
    held = CalendarEntry.build(
        row("cal_1"),
        3,
        sync_requested_at=None,
        backoff_until=None,
        push_until_s=None,
        blocks=blocks,
        blocks_version=2,
    )
    assert index.put_calendar(held, epoch=index.epoch)
    index.changed(Change("calendar", "cal_1", "int_1", 4))  # e.g. a sync was requested
    assert index.calendar("cal_1") is None  # not answered from any more
    assert index.retired(["cal_1", "cal_2"]) == {"cal_1": held}
    pending = datetime(2026, 12, 7, 9, tzinfo=UTC)
    again = replace(held, version=4, sync_requested_at=pending)
    assert again.starts is held.starts and again.blocks_version == 2
    assert index.put_calendar(again, epoch=index.epoch)
    assert index.retired(["cal_1"]) == {}
    assert index.nbytes == again.nbytes  # the shared arrays are counted once
    assert index.calendar("cal_1") == again


def test_retired_arrays_go_first_when_memory_is_short_and_at_a_reset() -> None:
    blocks = [(T0 + timedelta(hours=k), T0 + timedelta(hours=k, minutes=30)) for k in range(100)]
    one = entry("cal_a", blocks=blocks).nbytes
    index = usable(budget_bytes=2 * one)
    assert index.put_calendar(entry("cal_a", blocks=blocks), epoch=index.epoch)
    index.changed(Change("calendar", "cal_a", "int_1", 2))
    assert index.put_calendar(entry("cal_b", blocks=blocks), epoch=index.epoch)
    assert index.retired(["cal_a"]) != {}
    assert index.put_calendar(entry("cal_c", blocks=blocks), epoch=index.epoch)
    # Over budget: the retired arrays went, both live entries stayed.
    assert index.retired(["cal_a"]) == {}
    assert index.calendar("cal_b") is not None and index.calendar("cal_c") is not None
    index.changed(Change("calendar", "cal_b", "int_1", 2))
    index.reset(usable=True)
    assert index.retired(["cal_b"]) == {} and index.nbytes == 0
