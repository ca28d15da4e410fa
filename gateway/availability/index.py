"""The in-process availability index: what a warm free/busy answer needs, without a database.

    index = AvailabilityIndex(budget_bytes=64 * 2**20)
    entry = index.integration(integration_id)          # status, version, its calendar ids
    entries = index.calendars(entry.calendar_ids)      # None when any one is not held
    entries[0].freshness(now, push_trust_s), entries[0].busy_between(start, end)

Per calendar (`CalendarEntry`): the active generation's busy blocks as two sorted arrays of
epoch seconds (merged, so both are sorted and a window is two bisects, whatever the calendar's
size), and what its freshness is computed from (the row, whether a sync is pending, until when a
push channel is live). Freshness depends on the clock (a channel expires), so the entry keeps its
inputs and `freshness(now)` computes it with the same function as the database path.

Coherence. Every entry carries the version it was read at (gateway.db.notify). The index is a
`Subscriber`: a change drops an older entry and raises that row's floor; `put_*` refuses an
entry below its floor (it was read before a change this process has already heard of) or read
before the last `reset` (the epoch). While not `usable` (the LISTEN connection is down) it
holds and answers nothing: callers read the database. An entry a change dropped is kept aside
(`retired`) for its arrays: most changes are of freshness alone (a sync requested, claimed,
released), and a reload whose `blocks_version` still matches reads only the calendar's row.

Memory. Entries are held least-recently-used first and dropped beyond `budget_bytes`, estimated
from the arrays' sizes plus a fixed overhead per entry. Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.availability.spans import US_PER_S, Span
from gateway.connections.model import Integration
from gateway.db.notify import Change
from gateway.db.values import epoch_ceil, epoch_floor
from gateway.sync.calendar_store import CalendarRow
from gateway.sync.freshness import copy_as_of
from gateway.sync.read_store import CalendarFreshness, calendar_freshness

# Python objects around the arrays (the entry, the row, the dict slot), measured roughly with
# sys.getsizeof on CPython 3.11: a budget guide, not an exact account.
ENTRY_OVERHEAD_BYTES = 1_200
INTEGRATION_OVERHEAD_BYTES = 1_000
# A push channel without an expiry (Google always sets one; kept open-ended if absent).
FOREVER = math.inf


@dataclass(frozen=True, slots=True)
class CalendarEntry:
    """One calendar as the index holds it (see the module doc)."""

    row: CalendarRow
    version: int
    sync_requested_at: datetime | None
    syncing: bool  # a sync holds the calendar: pending too (gateway.sync.read_store)
    backoff_until: datetime | None
    push_until_s: float | None  # latest expiry of an active channel; None: no active channel
    # The last sign of life of its active channels (gateway.sync.freshness: push is trusted for
    # GATEWAY_PUSH_TRUST_S after it), and why no channel opened.
    push_heard_at: datetime | None
    push_error: str | None
    starts: array[int]
    ends: array[int]
    # The calendar's blocks_version the arrays were read at (gateway.db.notify): an entry at a
    # newer version with the same blocks_version shares them (dataclasses.replace).
    blocks_version: int = 0

    @classmethod
    def build(
        cls,
        row: CalendarRow,
        version: int,
        *,
        sync_requested_at: datetime | None,
        syncing: bool = False,
        backoff_until: datetime | None,
        push_until_s: float | None,
        push_heard_at: datetime | None = None,
        push_error: str | None = None,
        blocks: Iterable[tuple[datetime, datetime]],
        blocks_version: int = 0,
    ) -> CalendarEntry:
        """An entry from the active generation's blocks (any order, may overlap). They are
        merged as gateway.availability.intervals.merge does (touching blocks join, empty ones
        vanish); a sub-second edge is widened to the whole second (busy, never free)."""
        return cls.from_seconds(
            row,
            version,
            sync_requested_at=sync_requested_at,
            syncing=syncing,
            backoff_until=backoff_until,
            push_until_s=push_until_s,
            push_heard_at=push_heard_at,
            push_error=push_error,
            seconds=((epoch_floor(a), epoch_ceil(b)) for a, b in blocks if b > a),
            blocks_version=blocks_version,
        )

    @classmethod
    def from_seconds(
        cls,
        row: CalendarRow,
        version: int,
        *,
        sync_requested_at: datetime | None,
        syncing: bool = False,
        backoff_until: datetime | None,
        push_until_s: float | None,
        push_heard_at: datetime | None,
        push_error: str | None,
        seconds: Iterable[tuple[int, int]],
        blocks_version: int,
    ) -> CalendarEntry:
        """As `build`, from blocks already in whole epoch seconds (start floored, end ceiled:
        gateway.sync.read_store reads them so)."""
        starts: array[int] = array("q")
        ends: array[int] = array("q")
        last = None  # the end of the span being merged (ends[-1], kept in a local)
        for s, e in sorted(seconds):  # C-level sort; empty blocks are skipped in the loop
            if e <= s:
                continue
            if last is not None and s <= last:
                if e > last:
                    ends[-1] = last = e
            else:
                starts.append(s)
                ends.append(e)
                last = e
        return cls(
            row,
            version,
            sync_requested_at,
            syncing,
            backoff_until,
            push_until_s,
            push_heard_at,
            push_error,
            starts,
            ends,
            blocks_version,
        )

    @property
    def nbytes(self) -> int:
        return ENTRY_OVERHEAD_BYTES + self.starts.itemsize * (len(self.starts) + len(self.ends))

    def push_live(self, now: datetime) -> bool:
        return self.push_until_s is not None and self.push_until_s > now.timestamp()

    def freshness(self, now: datetime, push_trust_s: float) -> CalendarFreshness:
        """The calendar's freshness at `now`, as SyncStore.cached_view computes it. (One
        approximation: the sign of life is the newest of all active channels', where the
        database takes only the unexpired ones'; a calendar has one channel but for the minutes
        of a renewal.)"""
        row = {
            "sync_requested_at": self.sync_requested_at,
            "lease_owner": "" if self.syncing else None,
            "backoff_until": self.backoff_until,
            "push_error": self.push_error,
        }
        heard = self.push_heard_at if self.push_live(now) else None
        return calendar_freshness(self.row, row, heard, now, push_trust_s)

    def as_of(self, now: datetime, push_trust_s: float) -> datetime | None:
        """`freshness(now, push_trust_s).as_of`, without building the rest: all a warm
        free/busy answer needs of it."""
        heard = self.push_heard_at if self.push_live(now) else None
        row = self.row
        return copy_as_of(
            now,
            complete=row.active_generation is not None,
            synced=row.state == "synced",
            sync_pending=self.sync_requested_at is not None or self.syncing,
            push_live=heard is not None,
            last_success_at=row.last_success_at,
            last_push_at=heard,
            push_trust_s=push_trust_s,
        )

    def spans_between(self, lo_us: int, hi_us: int) -> list[Span]:
        """The busy time in [lo_us, hi_us) (epoch microseconds) as merged spans clipped to
        it (gateway.availability.spans): two bisects and one tuple per block."""
        starts, ends = self.starts, self.ends
        # A block [s, e) of whole seconds overlaps iff e * 1e6 > lo_us and s * 1e6 < hi_us.
        first = bisect_right(ends, lo_us // US_PER_S)
        last = bisect_left(starts, -(-hi_us // US_PER_S))
        if first >= last:
            return []
        # Two flat comprehensions and a zip: measured 40% cheaper than one loop unpacking pairs.
        out = list(
            zip(
                [s * US_PER_S for s in starts[first:last]],
                [e * US_PER_S for e in ends[first:last]],
                strict=True,
            )
        )
        if out[0][0] < lo_us:
            out[0] = (lo_us, out[0][1])
        if out[-1][1] > hi_us:
            out[-1] = (out[-1][0], hi_us)
        return out

    def busy_between(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        """The blocks overlapping [start, end), by start (not clipped): two bisects."""
        lo = bisect_right(self.ends, start.timestamp())
        hi = bisect_left(self.starts, end.timestamp())
        return [
            (datetime.fromtimestamp(self.starts[k], UTC), datetime.fromtimestamp(self.ends[k], UTC))
            for k in range(lo, hi)
        ]


@dataclass(frozen=True, slots=True)
class IntegrationEntry:
    """An integration (its status decides whether anything may be answered) and the ids of
    its calendars, in the order availability lists them."""

    integration: Integration
    version: int
    calendar_ids: tuple[str, ...]


class AvailabilityIndex:
    """Calendars and integrations held in memory, kept coherent by changes (a Subscriber of
    gateway.db.notify) and bounded by `budget_bytes`."""

    def __init__(self, *, budget_bytes: int) -> None:
        if budget_bytes < 0:
            raise ValueError("budget_bytes must not be negative")
        self.budget_bytes = budget_bytes
        self._calendars: OrderedDict[str, CalendarEntry] = OrderedDict()
        # Entries a change made old, kept for their arrays: a reload whose blocks_version
        # still matches (only the freshness changed) reuses them instead of reading the blocks.
        self._retired: OrderedDict[str, CalendarEntry] = OrderedDict()
        self._integrations: OrderedDict[str, IntegrationEntry] = OrderedDict()
        self._calendar_floor: dict[str, int] = {}
        self._integration_floor: dict[str, int] = {}
        self._bytes = 0
        self._usable = False
        # Bumped by every reset: a read that began before it is not kept.
        self.epoch = 0

    def __repr__(self) -> str:
        return (
            f"AvailabilityIndex(usable={self._usable}, calendars={len(self._calendars)}, "
            f"bytes={self._bytes})"
        )

    @property
    def usable(self) -> bool:
        return self._usable

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._calendars)

    # -- reads --------------------------------------------------------------------------------

    def integration(self, integration_id: str) -> IntegrationEntry | None:
        if not self._usable:
            return None
        entry = self._integrations.get(integration_id)
        if entry is not None:
            self._integrations.move_to_end(integration_id)
        return entry

    def calendars(self, calendar_ids: Sequence[str]) -> list[CalendarEntry] | None:
        """The entries of `calendar_ids` in order, or None unless every one is held."""
        if not self._usable:
            return None
        out: list[CalendarEntry] = []
        for calendar_id in calendar_ids:
            entry = self._calendars.get(calendar_id)
            if entry is None:
                return None
            self._calendars.move_to_end(calendar_id)
            out.append(entry)
        return out

    def calendar(self, calendar_id: str) -> CalendarEntry | None:
        found = self.calendars([calendar_id])
        return found[0] if found else None

    def retired(self, calendar_ids: Sequence[str]) -> dict[str, CalendarEntry]:
        """The old entries held for `calendar_ids` (a change dropped them): their arrays are
        still the blocks of their `blocks_version`, for a reload to reuse if it matches."""
        if not self._usable:
            return {}
        return {c: e for c in calendar_ids if (e := self._retired.get(c)) is not None}

    # -- writes -------------------------------------------------------------------------------

    def put_integration(self, entry: IntegrationEntry, *, epoch: int) -> bool:
        """Hold `entry` unless it is older than a change already heard of, or was read before
        the last reset (`epoch` as it was when the read began)."""
        key = entry.integration.id
        if (
            not self._usable
            or epoch != self.epoch
            or entry.version < self._integration_floor.get(key, 0)
        ):
            return False
        old = self._integrations.pop(key, None)
        if old is not None:
            self._bytes -= self._integration_bytes(old)
        self._integrations[key] = entry
        self._bytes += self._integration_bytes(entry)
        self._shrink()
        return True

    def put_calendar(self, entry: CalendarEntry, *, epoch: int) -> bool:
        """As put_integration, for a calendar (`epoch` as it was when the read began)."""
        key = entry.row.id
        if (
            not self._usable
            or epoch != self.epoch
            or entry.version < self._calendar_floor.get(key, 0)
            or entry.nbytes > self.budget_bytes
        ):
            return False
        self._drop_calendar(key)
        self._calendars[key] = entry
        self._bytes += entry.nbytes
        self._shrink()
        return True

    @staticmethod
    def _integration_bytes(entry: IntegrationEntry) -> int:
        return INTEGRATION_OVERHEAD_BYTES + 40 * len(entry.calendar_ids)

    def _drop_calendar(self, calendar_id: str, *, retire: bool = False) -> None:
        old = self._calendars.pop(calendar_id, None)
        if old is not None:
            self._bytes -= old.nbytes
        gone = self._retired.pop(calendar_id, None)
        if gone is not None:
            self._bytes -= gone.nbytes
        if retire and old is not None:
            self._retired[calendar_id] = old
            self._bytes += old.nbytes

    def _drop_integration(self, integration_id: str) -> None:
        old = self._integrations.pop(integration_id, None)
        if old is not None:
            self._bytes -= self._integration_bytes(old)

    def _shrink(self) -> None:
        # Retired entries first (only a reload's shortcut), then calendars (the bulk); an
        # integration alone is cheap to reload.
        while self._bytes > self.budget_bytes and self._retired:
            _, gone = self._retired.popitem(last=False)
            self._bytes -= gone.nbytes
        while self._bytes > self.budget_bytes and self._calendars:
            self._drop_calendar(next(iter(self._calendars)))
        while self._bytes > self.budget_bytes and self._integrations:
            self._drop_integration(next(iter(self._integrations)))

    # -- Subscriber (gateway.db.notify) ---------------------------------------------------------

    def changed(self, change: Change) -> None:
        if change.kind == "calendar":
            key = change.id
            if change.version > self._calendar_floor.get(key, 0):
                self._calendar_floor[key] = change.version
            entry = self._calendars.get(key)
            if entry is not None and entry.version < change.version:
                self._drop_calendar(key, retire=True)
            owner = self._integrations.get(change.integration_id or "")
            if owner is not None and key not in owner.calendar_ids:
                self._drop_integration(owner.integration.id)
        elif change.kind == "integration":
            key = change.id
            if change.version > self._integration_floor.get(key, 0):
                self._integration_floor[key] = change.version
            held = self._integrations.get(key)
            if held is not None and held.version < change.version:
                self._drop_integration(key)

    def reset(self, *, usable: bool) -> None:
        self.epoch += 1
        self._calendars.clear()
        self._retired.clear()
        self._integrations.clear()
        self._bytes = 0
        self._usable = usable

    async def external_write(self) -> None:
        # Nothing the index holds is written by another program: the CLI beside an SQLite
        # `serve` writes API keys and the vault (`api-keys`, `keys`), never integrations or
        # calendars. Dropping entries here anyway cost every burst after every commit: SQLite's
        # data_version also moves for this process's own writes, so the watcher fires ~0.25 s
        # after each sync, and a burst arriving then read the database once per request.
        return
