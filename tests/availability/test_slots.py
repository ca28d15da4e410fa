"""Slot finding: working hours across DST, buffers, notice, both modes, unknown time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.availability.intervals import BusyIndex, Interval, merge, subtract
from gateway.availability.slots import (
    Person,
    SlotQuery,
    WorkingHours,
    find_slots,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
NINE_TO_FIVE = WorkingHours.parse(
    {d: [["09:00", "17:00"]] for d in ("mon", "tue", "wed", "thu", "fri")}
)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def iv(a: str, b: str) -> Interval:
    return Interval(utc(a), utc(b))


def test_merge_and_subtract() -> None:
    merged = merge(
        [
            iv("2026-01-01T10:00Z", "2026-01-01T11:00Z"),
            iv("2026-01-01T11:00Z", "2026-01-01T12:00Z"),
            iv("2026-01-01T09:00Z", "2026-01-01T09:30Z"),
        ]
    )
    assert merged == [
        iv("2026-01-01T09:00Z", "2026-01-01T09:30Z"),
        iv("2026-01-01T10:00Z", "2026-01-01T12:00Z"),
    ]
    assert subtract([iv("2026-01-01T09:00Z", "2026-01-01T17:00Z")], merged) == [
        iv("2026-01-01T09:30Z", "2026-01-01T10:00Z"),
        iv("2026-01-01T12:00Z", "2026-01-01T17:00Z"),
    ]


def test_working_hours_stay_local_across_the_spring_dst_change() -> None:
    # Berlin moves clocks forward on Sunday 2026-03-29: Friday 09:00 is 08:00Z, Monday 09:00 07:00Z.
    query = SlotQuery(
        window=iv("2026-03-27T00:00Z", "2026-03-31T00:00Z"),
        duration=timedelta(minutes=30),
        time_zone=BERLIN,
        working_hours=NINE_TO_FIVE,
        granularity=timedelta(minutes=30),
    )
    answer = find_slots(query, [Person("a")], now=utc("2026-03-01T00:00Z"))
    firsts: dict[str, datetime] = {}
    for slot in answer.slots:
        firsts.setdefault(slot.start.astimezone(BERLIN).date().isoformat(), slot.start)
    assert firsts == {
        "2026-03-27": utc("2026-03-27T08:00Z"),
        "2026-03-30": utc("2026-03-30T07:00Z"),
    }
    assert all(s.start.astimezone(BERLIN).hour in range(9, 17) for s in answer.slots)
    assert len(answer.slots) == 2 * 16  # two working days, sixteen half hours each
    assert answer.complete


def test_buffer_notice_and_grid() -> None:
    busy = [iv("2026-11-23T10:00Z", "2026-11-23T11:00Z")]
    query = SlotQuery(
        window=iv("2026-11-23T09:00Z", "2026-11-23T13:00Z"),
        duration=timedelta(minutes=30),
        time_zone=ZoneInfo("UTC"),
        buffer=timedelta(minutes=15),
        granularity=timedelta(minutes=15),
        min_notice=timedelta(minutes=20),
    )
    answer = find_slots(query, [Person("a", busy=busy)], now=utc("2026-11-23T09:00Z"))
    starts = [s.start.strftime("%H:%M") for s in answer.slots]
    # Notice: nothing before 09:20, so the grid's first start is 09:30; but 09:30-10:00 plus
    # the 15-minute buffer touches the 10:00 meeting. After it, 11:15 is the first start.
    assert starts[0] == "11:15"
    assert starts[-1] == "12:30"
    unbuffered = find_slots(
        SlotQuery(**{**query.__dict__, "buffer": timedelta(0)}),
        [Person("a", busy=busy)],
        now=utc("2026-11-23T09:00Z"),
    )
    assert [s.start.strftime("%H:%M") for s in unbuffered.slots][:2] == ["09:30", "11:00"]


def test_all_and_any_modes() -> None:
    window = iv("2026-11-23T09:00Z", "2026-11-23T11:00Z")
    ann = Person("ann", busy=[iv("2026-11-23T09:00Z", "2026-11-23T10:00Z")])
    bob = Person("bob", busy=[iv("2026-11-23T10:00Z", "2026-11-23T11:00Z")])
    hour = timedelta(hours=1)
    base = {"window": window, "duration": hour, "time_zone": ZoneInfo("UTC"), "granularity": hour}
    together = find_slots(SlotQuery(**base, mode="all"), [ann, bob], now=utc("2026-11-01T00:00Z"))
    assert together.slots == []
    either = find_slots(SlotQuery(**base, mode="any"), [ann, bob], now=utc("2026-11-01T00:00Z"))
    assert [(s.start.hour, s.people) for s in either.slots] == [(9, ("bob",)), (10, ("ann",))]


def test_unknown_time_is_never_free_and_makes_the_answer_incomplete() -> None:
    window = iv("2026-11-23T09:00Z", "2026-11-23T12:00Z")
    known = Person("known")
    errored = Person("errored", unknown=[window])
    query = SlotQuery(
        window=window,
        duration=timedelta(hours=1),
        time_zone=ZoneInfo("UTC"),
        granularity=timedelta(hours=1),
    )
    now = utc("2026-11-01T00:00Z")
    group = find_slots(query, [known, errored], now)
    assert group.slots == [] and not group.complete
    assert group.incomplete_people == ("errored",)
    robin = find_slots(SlotQuery(**{**query.__dict__, "mode": "any"}), [known, errored], now)
    assert robin.slots and all(s.people == ("known",) for s in robin.slots)
    assert not robin.complete


def test_a_wall_time_in_the_dst_gap_is_skipped() -> None:
    # New York skips 02:00-03:00 on 2026-03-08: no slot may claim to start at 02:30 local.
    query = SlotQuery(
        window=iv("2026-03-08T05:00Z", "2026-03-08T09:00Z"),
        duration=timedelta(minutes=30),
        time_zone=NEW_YORK,
        granularity=timedelta(minutes=30),
    )
    starts = [
        s.start.astimezone(NEW_YORK).strftime("%H:%M")
        for s in find_slots(query, [Person("a")], utc("2026-03-01T00:00Z")).slots
    ]
    assert "02:00" not in starts and "02:30" not in starts
    assert starts[:4] == ["00:00", "00:30", "01:00", "01:30"]
    assert starts[4] == "03:00"


def test_a_wall_time_in_the_dst_fold_starts_a_slot_once_at_its_first_occurrence() -> None:
    # New York repeats 01:00-02:00 on 2026-11-01 (EDT, then EST): each wall time is offered
    # once, at its first occurrence, and the grid goes on in wall time.
    query = SlotQuery(
        window=iv("2026-11-01T04:00Z", "2026-11-01T08:00Z"),
        duration=timedelta(minutes=30),
        time_zone=NEW_YORK,
        granularity=timedelta(minutes=30),
    )
    slots = find_slots(query, [Person("a")], utc("2026-10-01T00:00Z")).slots
    assert [s.start.strftime("%H:%M") for s in slots] == [
        "04:00", "04:30", "05:00", "05:30", "07:00", "07:30",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"funday": [["09:00", "10:00"]]}, "working_hours.funday: unknown day"),
        ({"mon": [["10:00", "09:00"]]}, r"working_hours.mon\[0\]: end must be after start"),
        ({"mon": [["9am", "10:00"]]}, r"working_hours.mon\[0\]: must be a time"),
        ({"mon": [["09:00", "12:00"], ["11:00", "13:00"]]}, "periods overlap"),
        ({"mon": [["09:00"]]}, "pair"),
    ],
)
def test_bad_working_hours_name_the_entry(spec: dict[str, list[list[str]]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WorkingHours.parse(spec)


busy_strategy = st.lists(
    st.tuples(st.integers(0, 7 * 24 * 4), st.integers(1, 16)).map(
        lambda t: Interval(
            datetime(2026, 10, 20, tzinfo=UTC) + timedelta(minutes=15 * t[0]),
            datetime(2026, 10, 20, tzinfo=UTC) + timedelta(minutes=15 * (t[0] + t[1])),
        )
    ),
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(
    busy=busy_strategy,
    other=busy_strategy,
    minutes=st.sampled_from([15, 30, 45, 60, 90]),
    buffer=st.sampled_from([0, 5, 15]),
    zone=st.sampled_from(["Europe/Berlin", "America/New_York", "Asia/Kolkata", "UTC"]),
    mode=st.sampled_from(["all", "any"]),
)
def test_every_slot_obeys_every_rule(
    busy: list[Interval], other: list[Interval], minutes: int, buffer: int, zone: str, mode: str
) -> None:
    """Across the October DST change: each slot is in working hours (local), on the grid, of
    the right length, inside the window, and free (with buffer) for everyone it lists."""
    tz = ZoneInfo(zone)
    window = Interval(datetime(2026, 10, 20, tzinfo=UTC), datetime(2026, 10, 28, tzinfo=UTC))
    query = SlotQuery(
        window=window,
        duration=timedelta(minutes=minutes),
        time_zone=tz,
        mode=mode,  # type: ignore[arg-type]
        working_hours=NINE_TO_FIVE,
        buffer=timedelta(minutes=buffer),
        granularity=timedelta(minutes=15),
        limit=10_000,
    )
    people = [Person("p1", busy=busy), Person("p2", busy=other)]
    answer = find_slots(query, people, now=datetime(2026, 10, 1, tzinfo=UTC))
    indexes = {p.id: BusyIndex(p.busy) for p in people}
    for slot in answer.slots:
        assert slot.end - slot.start == timedelta(minutes=minutes)
        assert window.start <= slot.start and slot.end <= window.end
        local_start, local_end = slot.start.astimezone(tz), slot.end.astimezone(tz)
        assert local_start.weekday() < 5 and local_start.date() == local_end.date()
        assert local_start.hour * 60 + local_start.minute >= 9 * 60
        assert local_end.hour * 60 + local_end.minute <= 17 * 60
        assert local_start.minute % 15 == 0
        probe = Interval(slot.start, slot.end).widened(timedelta(minutes=buffer))
        assert slot.people, "a slot always names who is free"
        assert all(not indexes[pid].overlaps(probe) for pid in slot.people)
        if mode == "all":
            assert slot.people == ("p1", "p2")
    assert answer.complete
