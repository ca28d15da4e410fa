"""The sync engine: one entry point that syncs one calendar once.

    engine = SyncEngine(store=SyncStore(db), client=calendar_client, tokens=token_manager,
                        config=SyncConfig())
    [calendar] = await engine.ensure_calendars(integration_id)
    outcome = await engine.sync_calendar(calendar.id)
    blocks = await engine.busy_between(calendar.id, start, end)

What `sync_calendar` does:

* without a sync token (or a complete copy): a FULL sync. events.list with `timeMin` = the
  horizon's start (no `timeMax`: events beyond the horizon are kept as records so a moving
  horizon needs no new full sync), `showDeleted=true` (so cancelled instances of recurring
  series are certainly listed: they remove occurrences) and without `singleEvents` (masters
  come with their RRULE/EXDATE/RDATE lines and are expanded locally). Pages are written into a
  new generation; when the last page brought `nextSyncToken`, the busy blocks are computed and
  the generation is switched on in one UPDATE (readers never see a partial copy);
* with a token: an INCREMENTAL sync across every page with the same parameters plus
  `syncToken`. The whole delta is merged in one transaction with the recomputed blocks of the
  series it touches and the new token, so a failure half-way changes nothing;
* 410 fullSyncRequired (at any page): the token is dropped and a full sync builds a new
  generation; the old copy stays visible until the new one is complete;
* the calendar's time zone: every listing names it (`timeZone`), and all-day events and series
  without a zone of their own are busy in it. A full sync parses and expands in the zone its
  listing names and stores it with the switch; an incremental listing that names another zone
  than the copy was built in (the user changed it in Google Calendar's settings) is dropped
  and a full resync builds the copy again in the new zone, as after a 410.

It never calls Google for an integration that is not active (needs_reauth, disconnecting,
disconnected): it answers `SyncOutcome(status="inactive")`.

Scheduling (push, polling, leases across processes, backoff timing) is the caller's business;
`SyncOutcome` and the calendar row (`state`, `last_success_at`, `last_error`) say what happened.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from gateway.clock import rfc3339, utc_now
from gateway.connections.errors import IntegrationInactive
from gateway.connections.model import Integration
from gateway.errors import NotFound
from gateway.google.calendar import CalendarClient, TokenSource
from gateway.google.errors import GoogleError, SyncTokenExpired, TransientGoogleError
from gateway.google.events import LIST_FIELDS, zone
from gateway.observability.metrics import SYNC_RUNS
from gateway.sync.calendar_store import CalendarRow
from gateway.sync.config import SyncConfig
from gateway.sync.copy_store import Compute
from gateway.sync.errors import CalendarZoneChanged
from gateway.sync.lease_store import LeaseRelease
from gateway.sync.model import BusyBlock, EventRecord, Horizon, blocks_for_records
from gateway.sync.rows import EventRow, parse_rows, record_of
from gateway.sync.store import SyncStore

log = logging.getLogger(__name__)

Json = dict[str, Any]
PageHook = Callable[[str, int], Awaitable[None]]
"""Called after each page is handled, with the kind of sync ("full"/"incremental") and the
page number (tests use it to act between pages)."""
ExpansionHook = Callable[[str], None]
"""Called with the calendar id at the start of every busy-block computation, in the thread that
runs it (tests use it to hold an expansion while they act on the event loop; a small delta of
single events is computed on the event loop itself, see INLINE_EXPANSION_RECORDS)."""

_CAL = "https://www.googleapis.com/auth/calendar"
# Scopes that may read calendarList (from the Calendar v3 discovery document).
_CALENDAR_LIST_SCOPES = frozenset(
    {_CAL, f"{_CAL}.readonly", f"{_CAL}.calendarlist", f"{_CAL}.calendarlist.readonly"}
)

# Google's maximum page size: fewer round trips.
PAGE_SIZE = 2500
# A delta of this many records or fewer, none of them a recurring series, is expanded on the
# event loop (microseconds of work): a push usually brings one event, and a thread hop would be
# taken while the delta's transaction holds the database's writer (SQLite has one).
INLINE_EXPANSION_RECORDS = 32
# A full sync's page of more items than this is parsed in a worker thread.
INLINE_PARSE_ITEMS = 100


class TokenKeeper(Protocol):
    """What the engine needs of `gateway.connections.tokens.TokenManager`."""

    async def access_token(self, integration_id: str, *, request_id: str | None = None) -> str: ...

    async def prepared(self, integration_id: str) -> tuple[Integration, TokenSource] | None: ...

    async def force_refresh(
        self,
        integration_id: str,
        *,
        stale_access_token: str | None = None,
        request_id: str | None = None,
    ) -> str: ...


SyncKind = Literal["full", "incremental", "resync"]
RunOutcome = Literal["ok", "backoff", "error", "inactive", "crashed"]


async def _changed_zone(page: Json, current: str) -> str | None:
    """The calendar's time zone as an events.list page names it (`timeZone`) when that is
    another than `current` and one this machine knows; else None (the stored zone stays).
    Only a changed zone is looked up, off the event loop (a zone's first load reads its
    file): nearly every listing names the zone the copy was built in."""
    name = page.get("timeZone")
    if not isinstance(name, str) or not name or name == current:
        return None
    # `zone` answers its fallback, datetime.UTC, for an unknown name (ZoneInfo("UTC") is
    # another object).
    return None if await asyncio.to_thread(zone, name) is UTC else name


def _counted(kind: SyncKind, outcome: RunOutcome, result: SyncOutcome) -> SyncOutcome:
    """Count one sync run in gateway_sync_runs_total and hand its outcome on."""
    SYNC_RUNS.labels(kind, outcome).inc()
    return result


class ManagedTokenSource:
    """The Calendar client's `TokenSource` for one integration, over the TokenManager."""

    def __init__(self, tokens: TokenKeeper, integration_id: str) -> None:
        self._tokens = tokens
        self._integration_id = integration_id

    def __repr__(self) -> str:
        return f"ManagedTokenSource({self._integration_id!r})"

    async def access_token(self) -> str:
        return await self._tokens.access_token(self._integration_id)

    async def refreshed_token(self, stale: str) -> str:
        return await self._tokens.force_refresh(self._integration_id, stale_access_token=stale)


@dataclass(frozen=True)
class SyncOutcome:
    """What one `sync_calendar` call did.

    status   synced: the local copy is current; inactive: the integration may not be used
             (nothing was asked of Google); failed: Google or the token failed (`error` holds
             the code, the calendar row says `backoff` for transient failures, else `error`)
    full     whether a full sync ran (first sync, or after a 410)
    resynced whether that full sync was forced by a 410
    """

    calendar_id: str
    status: Literal["synced", "inactive", "failed"]
    full: bool = False
    resynced: bool = False
    generation: int | None = None
    pages: int = 0
    changes: int = 0
    error: str | None = None
    # Google's Retry-After of a transient failure, when it sent one (the scheduler's backoff).
    retry_after_s: float | None = None
    # Whether the transaction that stored the result also released the lease (`release`).
    released: bool = False


@dataclass
class _CalendarLock:
    """One calendar's in-process lock; `users` counts holders and waiters so the entry is
    dropped when nobody needs it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


def new_calendar_id(random_bytes: bytes) -> str:
    """`cal_` + 24 hex characters."""
    if len(random_bytes) != 12:
        raise ValueError("a calendar id takes 12 random bytes")
    return "cal_" + random_bytes.hex()


class SyncEngine:
    """Keeps the local busy-time copy of connected calendars (see the module doc)."""

    def __init__(
        self,
        *,
        store: SyncStore,
        client: CalendarClient,
        tokens: TokenKeeper,
        config: SyncConfig | None = None,
        clock: Callable[[], datetime] = utc_now,
        random_bytes: Callable[[int], bytes] = os.urandom,
        page_hook: PageHook | None = None,
        expansion_hook: ExpansionHook | None = None,
    ) -> None:
        self.store = store
        self._client = client
        self._tokens = tokens
        self.config = config or SyncConfig()
        self._clock = clock
        self._random = random_bytes
        self._page_hook = page_hook
        self._expansion_hook = expansion_hook
        self._locks: dict[str, _CalendarLock] = {}

    def __repr__(self) -> str:
        return f"SyncEngine({self.config!r})"

    # -- calendars ----------------------------------------------------------------------------

    async def ensure_calendars(self, integration_id: str) -> list[CalendarRow]:
        """The calendars to sync for the integration (its primary), created from Google's
        calendar list on first use. An inactive integration gets what is stored, without a
        Google call."""
        prepared = await self._tokens.prepared(integration_id)
        if prepared is None:
            raise NotFound("no such integration")
        integration, tokens = prepared
        if not integration.usable:
            return await self.store.calendars_of(integration_id)
        if integration.granted_scopes & _CALENDAR_LIST_SCOPES:
            entries = await self._client.calendar_list(tokens, integration_id)
            primary = next((e for e in entries if e.get("primary")), None)
            if primary is None:
                return await self.store.calendars_of(integration_id)
            google_id, time_zone = str(primary["id"]), primary.get("timeZone")
        else:
            # The default grant (events.freebusy + events.owned) may not read the calendar
            # list; an events.list of one item says the primary's zone, and the primary's id
            # is the account's address.
            page = await self._client.list_events(
                tokens, integration_id, "primary", maxResults=1, fields="timeZone"
            )
            google_id, time_zone = integration.google_email or "primary", page.get("timeZone")
        return await self.store.ensure_listed(
            new_id=new_calendar_id(self._random(12)),
            integration_id=integration_id,
            tenant_id=integration.tenant_id,
            google_calendar_id=google_id,
            time_zone=str(time_zone or "UTC"),
            now=self._clock(),
        )

    # -- sync ---------------------------------------------------------------------------------

    async def sync_calendar(
        self,
        calendar_id: str,
        *,
        claimed: CalendarRow | None = None,
        release: LeaseRelease | None = None,
    ) -> SyncOutcome:
        """Sync one calendar once: full without a token, else incremental (see module doc).

        Calls for the same calendar in this process run one after the other (two full syncs
        at once would build the same generation). Across processes, the scheduler's lease
        keeps one syncer per calendar. `claimed` is the row as the scheduler's claim read it
        under that lease: used instead of reading it again (one query less on the
        push-to-visible path) unless another call ran here first. With `release`, a
        successful sync frees that lease in the transaction that stores its result
        (`SyncOutcome.released`).
        """
        entry = self._locks.setdefault(calendar_id, _CalendarLock())
        # An unheld lock is taken without yielding: nothing can sync in between.
        current = claimed if not entry.lock.locked() else None
        entry.users += 1
        try:
            async with entry.lock:
                return await self._sync_once(calendar_id, current, release)
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[calendar_id]

    async def _sync_once(
        self, calendar_id: str, current: CalendarRow | None, release: LeaseRelease | None
    ) -> SyncOutcome:
        calendar = current or await self.store.get(calendar_id)
        if calendar is None:
            raise NotFound("no such calendar")
        # What this run is, for gateway_sync_runs_total: a 410 turns it into a resync.
        kind: SyncKind = (
            "full"
            if calendar.sync_token is None or calendar.active_generation is None
            else "incremental"
        )
        # The integration and its first access token from one read of its row.
        prepared = await self._tokens.prepared(calendar.integration_id)
        if prepared is None or not prepared[0].usable:
            return _counted(kind, "inactive", SyncOutcome(calendar_id, "inactive"))
        integration, tokens = prepared
        try:
            if kind == "full":
                outcome = await self._full(
                    calendar, tokens, integration.owner_tag, resynced=False, release=release
                )
            else:
                try:
                    outcome = await self._incremental(
                        calendar, tokens, integration.owner_tag, release
                    )
                except (SyncTokenExpired, CalendarZoneChanged) as exc:
                    changed = isinstance(exc, CalendarZoneChanged)
                    why = "time zone changed" if changed else "sync token expired"
                    log.info("%s, full resync: calendar=%s", why, calendar.id)
                    kind = "resync"
                    outcome = await self._full(
                        calendar, tokens, integration.owner_tag, resynced=True, release=release
                    )
            return _counted(kind, "ok", outcome)
        except IntegrationInactive:
            # The grant died during this sync (the token manager moved it to needs_reauth).
            return _counted(kind, "inactive", SyncOutcome(calendar_id, "inactive"))
        except GoogleError as exc:
            transient = isinstance(exc, TransientGoogleError)
            code = exc.google_error or exc.code
            SYNC_RUNS.labels(kind, "backoff" if transient else "error").inc()
            await self.store.record_failure(
                calendar.id,
                state="backoff" if transient else "error",
                error_code=code,
                now=self._clock(),
            )
            log.warning("calendar sync failed: calendar=%s error=%s", calendar.id, code)
            retry_after = exc.retry_after_s if isinstance(exc, TransientGoogleError) else None
            return SyncOutcome(calendar_id, "failed", error=code, retry_after_s=retry_after)
        except Exception:
            # The database or a bug: the scheduler records it; counted so a dashboard sees it.
            SYNC_RUNS.labels(kind, "crashed").inc()
            raise

    def _params(self, horizon: Horizon | None) -> Json:
        params: Json = {"showDeleted": True, "maxResults": PAGE_SIZE, "fields": LIST_FIELDS}
        if horizon is not None:
            params["timeMin"] = rfc3339(horizon.start)
        return params

    def _parse_page(self, page: Json, calendar: CalendarRow, owner_tag: str) -> list[EventRow]:
        rows, skipped = parse_rows(
            page.get("items") or [],
            calendar_tz=calendar.time_zone,
            keep_details=self.config.store_event_details,
            owner_tag=owner_tag,
        )
        for item in skipped:
            # The id is Google's opaque key, not personal data; the content is not logged.
            log.warning(
                "skipping unreadable event: calendar=%s event=%s reason=%s",
                calendar.id,
                item.event_id,
                item.reason,
            )
        return rows

    async def _parse_full_page(
        self, page: Json, calendar: CalendarRow, owner_tag: str
    ) -> list[EventRow]:
        """`_parse_page` for a full sync's page: a large one in a worker thread (milliseconds
        of CPU that would otherwise stall every request and transaction on the event loop)."""
        if len(page.get("items") or ()) <= INLINE_PARSE_ITEMS:
            return self._parse_page(page, calendar, owner_tag)
        return await asyncio.to_thread(self._parse_page, page, calendar, owner_tag)

    async def _expand(
        self,
        calendar: CalendarRow,
        horizon: Horizon,
        records: Sequence[EventRecord] | None = None,
        rows: Sequence[EventRow] = (),
    ) -> list[BusyBlock]:
        """Busy blocks of `records` (or of `rows`), computed in a worker thread.

        Expanding a large calendar's series takes tens of milliseconds of CPU; on the event
        loop that would hold every API request meanwhile. In a thread the GIL still shares
        one core, but the interpreter switches every few milliseconds, so requests keep being
        served (the total CPU is the same; a process pool would add pickling of every record
        and block for no gain in latency)."""
        return await asyncio.to_thread(self._blocks, calendar, horizon, records, rows)

    def _blocks(
        self,
        calendar: CalendarRow,
        horizon: Horizon,
        records: Sequence[EventRecord] | None,
        rows: Sequence[EventRow],
    ) -> list[BusyBlock]:
        if self._expansion_hook is not None:
            self._expansion_hook(calendar.id)
        return blocks_for_records(
            records if records is not None else [record_of(r) for r in rows],
            calendar_tz=calendar.time_zone,
            horizon=horizon,
            tentative_is_busy=self.config.tentative_is_busy,
        )

    def _compute(self, calendar: CalendarRow, horizon: Horizon) -> Compute:
        async def compute(records: list[EventRecord]) -> list[BusyBlock]:
            if len(records) <= INLINE_EXPANSION_RECORDS and not any(r.recurrence for r in records):
                return self._blocks(calendar, horizon, records, ())
            return await self._expand(calendar, horizon, records)

        return compute

    async def _full(
        self,
        calendar: CalendarRow,
        tokens: TokenSource,
        owner_tag: str,
        *,
        resynced: bool,
        release: LeaseRelease | None = None,
    ) -> SyncOutcome:
        horizon = self.config.horizon(self._clock())
        pages, changes, sync_token, generation = 0, 0, None, 0
        whole: list[EventRow] | None = None
        async for page in self._client.event_pages(
            tokens, calendar.integration_id, calendar.google_calendar_id, **self._params(horizon)
        ):
            pages += 1
            if pages == 1 and (changed := await _changed_zone(page, calendar.time_zone)):
                # The copy is built in the zone the calendar has now (module doc).
                calendar = replace(calendar, time_zone=changed)
            rows = await self._parse_full_page(page, calendar, owner_tag)
            changes += len(rows)
            if pages == 1 and not page.get("nextPageToken"):
                # The whole calendar in one page (most: up to PAGE_SIZE events): written with
                # its blocks and switched on in one transaction below.
                whole = rows
            elif pages == 1:
                generation, _ = await self.store.begin_generation(calendar.id, rows)
            else:
                await self.store.write_page(calendar.id, generation, rows)
            sync_token = page.get("nextSyncToken")
            if self._page_hook is not None:
                await self._page_hook("full", pages)
        if whole is not None:

            async def blocks_of(kept: list[EventRow]) -> list[BusyBlock]:
                return await self._expand(calendar, horizon, rows=kept)

            stored, generation, count = await self.store.build_generation(
                calendar.id,
                whole,
                blocks_of,
                sync_token=sync_token,
                horizon=horizon,
                now=self._clock(),
                release=release,
                time_zone=calendar.time_zone,
            )
        else:
            # Pages were written as they came: the blocks come from the generation's records,
            # with whatever a booking merged into it meanwhile (`merge_local`).
            records = await self.store.records(calendar.id, generation)
            blocks = await self._expand(calendar, horizon, records)
            count = len(records)
            stored = await self.store.activate_generation(
                calendar.id,
                generation,
                blocks,
                sync_token=sync_token,
                horizon=horizon,
                now=self._clock(),
                release=release,
                time_zone=calendar.time_zone,
            )
        log.info(
            "full sync: calendar=%s generation=%d pages=%d events=%d",
            calendar.id,
            generation,
            pages,
            count,
        )
        return SyncOutcome(
            calendar.id,
            "synced",
            full=True,
            resynced=resynced,
            generation=generation,
            pages=pages,
            changes=changes,
            released=stored.released,
        )

    async def _incremental(
        self,
        calendar: CalendarRow,
        tokens: TokenSource,
        owner_tag: str,
        release: LeaseRelease | None = None,
    ) -> SyncOutcome:
        # The horizon the active copy was expanded for: moving it is re-expansion's job.
        horizon = calendar.horizon or self.config.horizon(self._clock())
        items: list[EventRow] = []
        pages, sync_token = 0, None
        async for page in self._client.event_pages(
            tokens,
            calendar.integration_id,
            calendar.google_calendar_id,
            syncToken=calendar.sync_token,
            **self._params(None),
        ):
            pages += 1
            if pages == 1 and await _changed_zone(page, calendar.time_zone) is not None:
                raise CalendarZoneChanged("the calendar's time zone changed")
            items.extend(self._parse_page(page, calendar, owner_tag))
            sync_token = page.get("nextSyncToken")
            if self._page_hook is not None:
                await self._page_hook("incremental", pages)
        stored = await self.store.apply_delta(
            calendar,
            items,
            compute=self._compute(calendar, horizon),
            sync_token=sync_token,
            now=self._clock(),
            release=release,
        )
        return SyncOutcome(
            calendar.id,
            "synced",
            generation=calendar.active_generation,
            pages=pages,
            changes=len(items),
            released=stored.released,
        )

    async def reexpand(self, calendar_id: str, horizon: Horizon | None = None) -> int | None:
        """Recompute every busy block of the calendar's active copy for `horizon` (default:
        the configured horizon around now) from the stored records, without calling Google.
        Returns the number of blocks, or None when there is no complete copy (or a full sync
        replaced it meanwhile)."""
        calendar = await self.store.get(calendar_id)
        if calendar is None:
            raise NotFound("no such calendar")
        generation = calendar.active_generation
        if generation is None:
            return None
        horizon = horizon or self.config.horizon(self._clock())
        records = await self.store.records(calendar_id, generation)
        blocks = await self._expand(calendar, horizon, records)
        if not await self.store.replace_blocks(
            calendar_id, generation, blocks, horizon, self._clock()
        ):
            return None
        return len(blocks)

    async def record_written(self, calendar_id: str, events: list[Json], *, owner_tag: str) -> bool:
        """Merge events the gateway just wrote to Google (booked, changed or cancelled: the
        resources Google answered with) into the local copy at once, then request a sync so
        Google's own view follows. True if the copy now shows them; False when there is no
        complete copy yet (availability then asks Google live anyway). `owner_tag` is the
        writing integration's (`Integration.owner_tag`)."""
        calendar = await self.store.get(calendar_id)
        if calendar is None:
            return False
        # Without a complete copy there are no blocks yet; a first build still gets the records.
        horizon = calendar.horizon or self.config.horizon(self._clock())
        rows = self._parse_page({"items": events}, calendar, owner_tag)
        merged = await self.store.merge_local(
            calendar, rows, compute=self._compute(calendar, horizon)
        )
        await self.store.request_sync(calendar_id, self._clock())
        return merged

    # -- reads and purge ----------------------------------------------------------------------

    async def busy_between(
        self, calendar_id: str, start: datetime, end: datetime
    ) -> list[tuple[datetime, datetime]]:
        """Raw busy blocks (UTC) of the calendar overlapping [start, end), sorted by start;
        overlapping blocks are NOT merged (`gateway.availability.intervals.merge` does that)."""
        return await self.store.busy_between(calendar_id, start, end)

    async def purge_integration(self, integration: Integration) -> int:
        """Disconnect hook (step 4): every calendar, record and block of the integration."""
        purged = await self.store.purge_integration(integration.id)
        log.info("sync records purged: integration=%s count=%d", integration.id, purged)
        return purged
