"""Availability answers for the agent: free/busy per integration and slots across several.

    service = AvailabilityService(sync=sync_engine, client=calendar_client, tokens=token_manager)
    answer = await service.freebusy(integration, window, max_staleness=timedelta(minutes=10))
    answers = await service.freebusy_each(integrations, window, max_staleness=...)
    found = await service.slots(integrations, slot_query, max_staleness=...)

No HTTP here: the routes (gateway.http.availability_routes) parse and render, and MCP tools can
call the same methods. Integrations are looked up (tenant, 404) by the caller.

Where an answer comes from, per calendar of the integration (our `cal_...` ids):

* the local copy (`source` cache) when it is complete, covers the window (the sync horizon) and
  is at most `max_staleness` old (`gateway.sync.freshness.copy_as_of`: a live push channel
  makes it current for GATEWAY_PUSH_TRUST_S after its last sign of life);
* otherwise Google's freeBusy, asked live for those calendars (`source` google);
* if Google fails, a copy that covers the window is answered as `stale` with its `as_of`; a
  calendar with no usable copy is `error` and contributes no busy time. If no calendar can be
  answered at all, the Google failure itself is raised (the route makes it a 503 with
  Retry-After for rate limiting): unknown time is never presented as free.

`complete` is true only when every calendar is `fresh`. For slots, a person whose answer is not
complete has the whole window treated as unknown (busy): a stale copy may miss the meeting that
was booked a minute ago, and offering that time is how double bookings happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from gateway.availability.index import (
    FOREVER,
    AvailabilityIndex,
    CalendarEntry,
    IntegrationEntry,
)
from gateway.availability.intervals import Interval
from gateway.availability.slots import Person, SlotAnswer, SlotQuery, find_slots
from gateway.availability.spans import (
    Span,
    clip_spans,
    intervals_of,
    merge_spans,
    spans_of,
    to_us,
)
from gateway.clock import rfc3339, utc_now
from gateway.connections.errors import IntegrationInactive
from gateway.connections.model import Integration
from gateway.connections.repository import row_to_integration
from gateway.errors import GatewayError, InvalidInput
from gateway.google.calendar import CalendarClient
from gateway.google.errors import (
    GoogleError,
    GoogleNotFound,
    RateLimited,
    TransientGoogleError,
    UnexpectedGoogleResponse,
)
from gateway.livecalls import SharedAnswers
from gateway.sync.calendar_store import CalendarRow
from gateway.sync.engine import ManagedTokenSource, SyncEngine, TokenKeeper
from gateway.sync.freshness import DEFAULT_PUSH_TRUST_S
from gateway.sync.read_store import CachedView, CalendarSnapshot

log = logging.getLogger(__name__)

Source = Literal["cache", "google"]
CalendarState = Literal["fresh", "stale", "error"]

# Google's freeBusy refuses ranges beyond about three months; two months keeps a margin for
# the buffers slots add around the window and bounds the work of one call.
MAX_WINDOW = timedelta(days=62)
# A day: older than that, an answer from the cache is not worth calling availability.
MAX_STALENESS = timedelta(days=1)
# Integrations in one call (POST /v1/freebusy, POST /v1/slots).
MAX_INTEGRATIONS = 50


@dataclass(frozen=True)
class CalendarStatus:
    """How one calendar of the answer was known.

    state   fresh: current within the caller's max staleness (cache or Google);
            stale: Google could not be asked, this is the local copy as of `as_of`;
            error: nothing trustworthy is known (no copy covering the window, Google failed)
    source  where its busy time came from (None for error)
    error   why it is stale or unknown: rate_limited, google_unavailable, not_found,
            google_error
    """

    calendar_id: str
    state: CalendarState
    as_of: datetime | None
    source: Source | None
    error: str | None = None


@dataclass(frozen=True)
class FreeBusy:
    """The busy time of one integration in `window` (merged, sorted, clipped), as epoch
    microsecond spans (gateway.availability.spans: what the hot path renders) and as
    `Interval`s (`busy`, built on demand for slots and bookings)."""

    integration_id: str
    window: Interval
    busy_us: list[Span]
    calendars: list[CalendarStatus]

    @property
    def busy(self) -> list[Interval]:
        """`busy_us` as UTC `Interval`s."""
        return intervals_of(self.busy_us)

    @property
    def complete(self) -> bool:
        """Every calendar is fresh (and there is at least one)."""
        return bool(self.calendars) and all(c.state == "fresh" for c in self.calendars)

    @property
    def source(self) -> Source:
        """google if any calendar was asked live, else cache."""
        return "google" if any(c.source == "google" for c in self.calendars) else "cache"

    @property
    def as_of(self) -> datetime | None:
        """The oldest `as_of` among the calendars that contributed busy time."""
        known = [c.as_of for c in self.calendars if c.as_of is not None and c.state != "error"]
        return min(known) if known else None


@dataclass(frozen=True)
class SlotsResult:
    """Slots, and per integration what its availability was (a FreeBusy, or the Google
    failure that left it unknown)."""

    answer: SlotAnswer
    availability: dict[str, FreeBusy | GoogleError]


def parse_window(time_min: datetime, time_max: datetime) -> Interval:
    """The window [time_min, time_max) in UTC, or 422 naming the field: both aware, min before
    max, at most MAX_WINDOW long."""
    for name, value in (("time_min", time_min), ("time_max", time_max)):
        if value.tzinfo is None:
            raise _invalid(name, "must have an offset")
    if time_max <= time_min:
        raise _invalid("time_max", "must be after time_min")
    if time_max - time_min > MAX_WINDOW:
        raise _invalid("time_max", f"the window may span at most {MAX_WINDOW.days} days")
    return Interval(time_min, time_max)


def parse_staleness(max_staleness_s: int | None, default: timedelta) -> timedelta:
    """`max_staleness_s` as a timedelta (default when None); 422 outside 0..MAX_STALENESS."""
    if max_staleness_s is None:
        return default
    if not 0 <= max_staleness_s <= MAX_STALENESS.total_seconds():
        raise _invalid(
            "max_staleness_s", f"must be between 0 and {int(MAX_STALENESS.total_seconds())}"
        )
    return timedelta(seconds=max_staleness_s)


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", code="invalid_field", extra={"field": field})


def _failure_code(exc: GoogleError) -> str:
    if isinstance(exc, RateLimited):
        return "rate_limited"
    if isinstance(exc, TransientGoogleError):
        return "google_unavailable"
    if isinstance(exc, GoogleNotFound):
        return "not_found"
    return "google_error"


def _covers(row: CalendarRow, window: Interval) -> bool:
    horizon = row.horizon
    return horizon is not None and horizon.start <= window.start and window.end <= horizon.end


@dataclass(frozen=True, slots=True)
class _Copy:
    """What the local copy says of an integration in one window: its calendars (in order),
    each one's `as_of` (None: no complete copy) and its busy spans clipped to the window,
    merged per calendar. From the index or from one database read (`CachedView`)."""

    calendars: list[CalendarRow]
    as_of: dict[str, datetime | None]
    spans: dict[str, list[Span]]


def _copy_of_view(view: CachedView, lo: int, hi: int) -> _Copy:
    as_of: dict[str, datetime | None] = {}
    for row in view.calendars:
        freshness = view.freshness.get(row.id)
        as_of[row.id] = freshness.as_of if freshness is not None else None
    spans = {
        calendar_id: clip_spans(((to_us(s), to_us(e)) for s, e in blocks), lo, hi)
        for calendar_id, blocks in view.blocks.items()
    }
    return _Copy(view.calendars, as_of, spans)


def _copy_of_entries(
    calendars: Sequence[CalendarEntry], now: datetime, lo: int, hi: int, push_trust_s: float
) -> _Copy:
    return _Copy(
        [c.row for c in calendars],
        {c.row.id: c.as_of(now, push_trust_s) for c in calendars},
        {c.row.id: c.spans_between(lo, hi) for c in calendars},
    )


def _from_copy(
    copy: _Copy, window: Interval, max_staleness: timedelta, now: datetime
) -> tuple[list[list[Span]], dict[str, CalendarStatus], list[CalendarRow]]:
    """The busy time (one merged list per calendar) and status of each calendar the copy may
    answer for (fresh enough and covering the window), and the calendars it may not (to ask
    Google)."""
    statuses: dict[str, CalendarStatus] = {}
    busy: list[list[Span]] = []
    live: list[CalendarRow] = []
    for row in copy.calendars:
        as_of = copy.as_of.get(row.id)
        if as_of is not None and _covers(row, window) and now - as_of <= max_staleness:
            busy.append(copy.spans.get(row.id, []))
            statuses[row.id] = CalendarStatus(row.id, "fresh", as_of, "cache")
        else:
            live.append(row)
    return busy, statuses, live


def _merged(parts: list[list[Span]]) -> list[Span]:
    """One merged list from per-calendar merged lists (most integrations have one calendar
    with busy time: that list is the answer as it is)."""
    filled = [p for p in parts if p]
    if len(filled) == 1:
        return filled[0]
    return merge_spans(span for part in filled for span in part)


def _entry_of(snapshot: CalendarSnapshot, held: CalendarEntry | None = None) -> CalendarEntry:
    """The index entry of a snapshot; `held` is an old entry whose arrays the snapshot did not
    read again (`blocks` None: the blocks_version is the same)."""
    push_until: float | None = None
    if snapshot.push_forever:
        push_until = FOREVER
    elif snapshot.push_until is not None:
        push_until = snapshot.push_until.timestamp()
    # What the row says of the calendar's freshness: the whole entry but its blocks.
    fields: dict[str, Any] = {
        "row": snapshot.row,
        "version": snapshot.version,
        "sync_requested_at": snapshot.sync_requested_at,
        "syncing": snapshot.syncing,
        "backoff_until": snapshot.backoff_until,
        "push_until_s": push_until,
        "push_heard_at": snapshot.push_heard_at,
        "push_error": snapshot.push_error,
    }
    if snapshot.blocks is None:
        assert held is not None and held.blocks_version == snapshot.blocks_version
        # The arrays are shared, not copied.
        return replace(held, **fields)
    return CalendarEntry.from_seconds(
        **fields, seconds=snapshot.blocks, blocks_version=snapshot.blocks_version
    )


def _google_busy(entry: Any, lo: int, hi: int) -> list[Span]:
    """The busy list of one calendar of Google's freeBusy answer; UnexpectedGoogleResponse if
    it is not one."""
    try:
        found = [
            Interval(datetime.fromisoformat(b["start"]), datetime.fromisoformat(b["end"]))
            for b in entry["busy"]
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise UnexpectedGoogleResponse("Google freeBusy answered an unreadable busy list") from exc
    return clip_spans(spans_of(found), lo, hi)


class AvailabilityService:
    """Free/busy and slots over the sync engine's copy, with Google's freeBusy as the live
    fallback (see the module doc)."""

    def __init__(
        self,
        *,
        sync: SyncEngine,
        client: CalendarClient,
        tokens: TokenKeeper,
        clock: Callable[[], datetime] = utc_now,
        concurrency: int = 8,
        shared: SharedAnswers[Any] | None = None,
        index: AvailabilityIndex | None = None,
        push_trust_s: float = DEFAULT_PUSH_TRUST_S,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._sync = sync
        self._store = sync.store
        self._client = client
        self._tokens = tokens
        self._clock = clock
        self._concurrency = concurrency
        # Identical live questions answered once (gateway.livecalls); by default only those
        # asked while one is in flight.
        self._shared = (
            shared if shared is not None else SharedAnswers(ttl=timedelta(0), clock=clock)
        )
        self._index = index
        self._flights: dict[str, asyncio.Future[None]] = {}
        self._push_trust_s = push_trust_s  # GATEWAY_PUSH_TRUST_S (gateway.sync.freshness)

    def __repr__(self) -> str:
        return f"AvailabilityService(concurrency={self._concurrency})"

    # -- one integration ----------------------------------------------------------------------

    async def freebusy(
        self,
        integration: Integration,
        window: Interval,
        *,
        max_staleness: timedelta,
        share: bool = True,
    ) -> FreeBusy:
        """Busy time of `integration` in `window`, from the cache when fresh enough, else
        from Google. Raises IntegrationInactive for an integration that may not be used, and
        the GoogleError when no calendar could be answered at all. `share=False` asks Google
        itself instead of sharing an identical question's answer (a booking's free check)."""
        if not integration.usable:
            raise IntegrationInactive(integration.status, reason=integration.reauth_reason)
        now = self._clock()
        lo, hi = to_us(window.start), to_us(window.end)
        # Calendars, freshness and cached busy time: from memory when held (the hot path),
        # else in one read.
        copy = await self._copy(integration.id, now, window, lo, hi)
        if not copy.calendars:
            # Never synced in any process yet: learn its calendars (one Google call); the
            # scheduler syncs them from then on.
            await self._sync.ensure_calendars(integration.id)
            now = self._clock()
            copy = await self._copy(integration.id, now, window, lo, hi)
        busy, statuses, live = _from_copy(copy, window, max_staleness, now)
        failure: GoogleError | None = None
        if live:
            failure = await self._ask_google(
                integration, live, window, busy, statuses, copy.as_of, max_staleness, share
            )
        ordered = [statuses[row.id] for row in copy.calendars]
        if failure is not None and all(s.state == "error" for s in ordered):
            raise failure
        return FreeBusy(integration.id, window, _merged(busy), ordered)

    def forget_live_answers(self, integration_id: str) -> None:
        """Kept live answers of the integration no longer hold (a booking changed it)."""
        self._shared.forget(lambda q: isinstance(q, tuple) and q[1] == integration_id)

    async def _read_copy(
        self, integration_id: str, now: datetime, window: Interval, lo: int, hi: int
    ) -> _Copy:
        view = await self._store.cached_view(
            integration_id, now, window.start, window.end, push_trust_s=self._push_trust_s
        )
        return _copy_of_view(view, lo, hi)

    # -- the in-process index (gateway.availability.index) -------------------------------------

    def held_integration(self, tenant_id: str, integration_id: str) -> Integration | None:
        """The tenant's integration if the index holds it (its status is current: any change
        drops it), else None (then call `integration`)."""
        entry = self._index.integration(integration_id) if self._index is not None else None
        if entry is None or entry.integration.tenant_id != tenant_id:
            return None
        return entry.integration

    async def integration(self, tenant_id: str, integration_id: str) -> Integration | None:
        """The tenant's integration `integration_id` (None if it is not the tenant's or does
        not exist), from the index when held; a read is held for the next call."""
        found = self.held_integration(tenant_id, integration_id)
        if found is not None:
            return found
        async with self._flight(f"i {integration_id}"):
            # After waiting for another caller's load it is usually held now (else this
            # caller reads it: another tenant's id, or a change came meanwhile).
            found = self.held_integration(tenant_id, integration_id)
            if found is not None:
                return found
            return await self._load_integration(tenant_id, integration_id)

    async def _load_integration(self, tenant_id: str, integration_id: str) -> Integration | None:
        index = self._index
        epoch = index.epoch if index is not None else 0
        loaded = await self._store.index_integration(integration_id)
        if loaded is None:
            return None
        row, version, calendar_ids = loaded
        entry = IntegrationEntry(row_to_integration(row), version, tuple(calendar_ids))
        if index is not None:
            index.put_integration(entry, epoch=epoch)
        return entry.integration if entry.integration.tenant_id == tenant_id else None

    def _held_copy(self, integration_id: str, now: datetime, lo: int, hi: int) -> _Copy | None:
        """The copy from the index, or None unless all of it is held."""
        index = self._index
        entry = index.integration(integration_id) if index is not None else None
        if index is None or entry is None or not entry.calendar_ids:
            return None
        calendars = index.calendars(entry.calendar_ids)
        if calendars is None:
            return None
        return _copy_of_entries(calendars, now, lo, hi, self._push_trust_s)

    async def _copy(
        self, integration_id: str, now: datetime, window: Interval, lo: int, hi: int
    ) -> _Copy:
        held = self._held_copy(integration_id, now, lo, hi)
        if held is not None:
            return held
        index = self._index
        entry = index.integration(integration_id) if index is not None else None
        if index is None or entry is None or not entry.calendar_ids:
            return await self._read_copy(integration_id, now, window, lo, hi)
        while True:
            async with self._flight(f"c {integration_id}") as leader:
                if leader:
                    return await self._load_copy(
                        integration_id, entry.calendar_ids, now, window, lo, hi
                    )
                # A load just ended: held now, unless a change came meanwhile (then queue for
                # the next load rather than all reading at once).
                held = self._held_copy(integration_id, now, lo, hi)
                if held is not None:
                    return held

    async def _load_copy(
        self,
        integration_id: str,
        calendar_ids: tuple[str, ...],
        now: datetime,
        window: Interval,
        lo: int,
        hi: int,
    ) -> _Copy:
        # Load the integration's calendars into the index; this read answers either way.
        index = self._index
        assert index is not None
        epoch = index.epoch
        # A change of freshness alone (a sync requested or claimed) keeps the blocks: their
        # arrays are reused and only the rows are read.
        held = index.retired(calendar_ids)
        snapshots = await self._store.index_calendars(
            calendar_ids, known={c: e.blocks_version for c, e in held.items()}
        )
        loaded = {s.row.id: _entry_of(s, held.get(s.row.id)) for s in snapshots}
        for calendar in loaded.values():
            index.put_calendar(calendar, epoch=epoch)
        if set(loaded) != set(calendar_ids):  # a calendar went meanwhile
            return await self._read_copy(integration_id, now, window, lo, hi)
        return _copy_of_entries([loaded[c] for c in calendar_ids], now, lo, hi, self._push_trust_s)

    @contextlib.asynccontextmanager
    async def _flight(self, key: str) -> AsyncIterator[bool]:
        """One index load per key at a time: True for the caller that loads; a caller that
        arrives meanwhile waits for that load to end and gets False (look in the index again).
        A burst of requests after a change then reads the rows once, not once each."""
        running = self._flights.get(key)
        if running is not None:
            await asyncio.shield(running)  # the loader's cancellation must not end our wait
            yield False
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flights[key] = done
        try:
            yield True
        finally:
            del self._flights[key]
            done.set_result(None)

    async def _cached(self, row: CalendarRow, window: Interval) -> list[Span]:
        blocks = await self._store.busy_between(row.id, window.start, window.end)
        return clip_spans(
            ((to_us(s), to_us(e)) for s, e in blocks), to_us(window.start), to_us(window.end)
        )

    async def _ask_google(
        self,
        integration: Integration,
        rows: list[CalendarRow],
        window: Interval,
        busy: list[list[Span]],
        statuses: dict[str, CalendarStatus],
        as_of: dict[str, datetime | None],
        max_staleness: timedelta,
        share: bool,
    ) -> GoogleError | None:
        """Fill `busy` and `statuses` for `rows` from Google's freeBusy, falling back to stale
        copies; returns the failure of the call, if it failed as a whole. The same question
        asked again within seconds is answered once (`SharedAnswers`); the live-call limits
        may refuse the call (TooManyRequests, raised as is)."""
        time_min, time_max = rfc3339(window.start), rfc3339(window.end)
        calendar_ids = [row.google_calendar_id for row in rows]
        question = (integration.tenant_id, integration.id, tuple(calendar_ids), time_min, time_max)

        async def ask() -> Any:
            return await self._client.freebusy(
                ManagedTokenSource(self._tokens, integration.id),
                integration.id,
                time_min=time_min,
                time_max=time_max,
                calendar_ids=calendar_ids,
            )

        try:
            if share:
                answer, asked_at = await self._shared.get(question, ask, max_age=max_staleness)
            else:
                answer, asked_at = await ask(), self._clock()
        except GoogleError as exc:
            log.warning(
                "live freebusy failed: integration=%s error=%s", integration.id, _failure_code(exc)
            )
            for row in rows:
                await self._fall_back(row, window, busy, statuses, as_of, _failure_code(exc))
            return exc
        calendars = answer.get("calendars")
        for row in rows:
            entry = calendars.get(row.google_calendar_id) if isinstance(calendars, dict) else None
            errors = entry.get("errors") if isinstance(entry, dict) else None
            try:
                if entry is None or errors:
                    first = errors[0] if isinstance(errors, list) else None
                    reason = str(first.get("reason")) if isinstance(first, dict) else None
                    raise GoogleNotFound(
                        "freeBusy did not answer for this calendar", google_error=reason
                    )
                busy.append(_google_busy(entry, to_us(window.start), to_us(window.end)))
                statuses[row.id] = CalendarStatus(row.id, "fresh", asked_at, "google")
            except GoogleError as exc:
                await self._fall_back(row, window, busy, statuses, as_of, _failure_code(exc))
        return None

    async def _fall_back(
        self,
        row: CalendarRow,
        window: Interval,
        busy: list[list[Span]],
        statuses: dict[str, CalendarStatus],
        copy_as_of: dict[str, datetime | None],
        error: str,
    ) -> None:
        """The stale copy when it covers the window, else an unknown calendar."""
        as_of = copy_as_of.get(row.id)
        if as_of is not None and _covers(row, window):
            busy.append(await self._cached(row, window))
            statuses[row.id] = CalendarStatus(row.id, "stale", as_of, "cache", error)
        else:
            statuses[row.id] = CalendarStatus(row.id, "error", None, None, error)

    # -- several integrations -----------------------------------------------------------------

    async def freebusy_each(
        self, integrations: Sequence[Integration], window: Interval, *, max_staleness: timedelta
    ) -> list[FreeBusy | GatewayError]:
        """`freebusy` of each integration, at most `concurrency` at a time, in the given order;
        a failure of one (inactive, Google) is its entry instead of failing the rest."""
        gate = asyncio.Semaphore(self._concurrency)

        async def one(integration: Integration) -> FreeBusy | GatewayError:
            async with gate:
                try:
                    return await self.freebusy(integration, window, max_staleness=max_staleness)
                except GatewayError as exc:
                    return exc

        # One pass over the index first: every integration it answers completely costs no
        # task, no await and no database read; only the rest are asked concurrently.
        now = self._clock()
        lo, hi = to_us(window.start), to_us(window.end)
        results: list[FreeBusy | GatewayError | None] = []
        for integration in integrations:
            copy = self._held_copy(integration.id, now, lo, hi) if integration.usable else None
            answer: FreeBusy | None = None
            if copy is not None:
                busy, statuses, live = _from_copy(copy, window, max_staleness, now)
                if not live:
                    ordered = [statuses[row.id] for row in copy.calendars]
                    answer = FreeBusy(integration.id, window, _merged(busy), ordered)
            results.append(answer)
        missing = [i for i, r in zip(integrations, results, strict=True) if r is None]
        asked = iter(await asyncio.gather(*(one(i) for i in missing)))
        return [r if r is not None else next(asked) for r in results]

    async def slots(
        self,
        integrations: Sequence[Integration],
        query: SlotQuery,
        *,
        max_staleness: timedelta,
    ) -> SlotsResult:
        """Slots for `integrations` (each a Person of `find_slots`). An integration that Google
        could not answer for, or whose answer is not complete, is unknown over the whole
        window: never offered as free, and the answer says `complete=False`. Raises the
        Google failure when no integration could be answered at all, and IntegrationInactive
        for one that may not be used."""
        if not integrations:
            raise ValueError("at least one integration is needed")
        # Busy time just outside the window still counts against a slot's buffers.
        fetch = query.window.widened(query.buffer)
        results = await self.freebusy_each(integrations, fetch, max_staleness=max_staleness)
        people: list[Person] = []
        availability: dict[str, FreeBusy | GoogleError] = {}
        for integration, result in zip(integrations, results, strict=True):
            if isinstance(result, FreeBusy):
                unknown = [] if result.complete else [fetch]
                people.append(Person(integration.id, unknown=unknown, busy_us=result.busy_us))
            elif isinstance(result, GoogleError):
                people.append(Person(integration.id, (), [fetch]))
            else:
                raise result
            availability[integration.id] = result
        failures = [r for r in results if isinstance(r, GoogleError)]
        if len(failures) == len(results):
            raise failures[0]
        return SlotsResult(find_slots(query, people, self._clock()), availability)
