"""Booking without HTTP: the REST routes and the MCP tools both call `BookingService`.

    service = BookingService(store=BookingStore(engine), client=calendar_client,
                             tokens=token_manager, sync=sync_engine, availability=availability,
                             max_staleness=timedelta(seconds=30))
    result = await service.book(integration, tenant_id, idempotency_key, parse_booking(...))
    result.event, result.replayed
    events = await service.list_events(integration, tenant_id, window)
    event = await service.update(integration, tenant_id, event_id, parse_change(...),
                                 if_match=etag)
    await service.cancel(integration, tenant_id, event_id)

Exactly one event per Idempotency-Key, whatever fails when:

1. The Google event id is `google_event_id(tenant, integration, key)` and is sent on insert.
2. A `pending` booking row is committed BEFORE Google is asked. A retry that finds it pending
   (the answer was lost, or the process died after Google's success) first asks Google for that
   event id: found means booked (answered as a replay); else it books as usual.
3. An insert answered 409 `duplicate` means an earlier attempt created it: events.get, success.
4. The same key with another request (its normalised fingerprint) is IdempotencyKeyReused;
   with the same request after success, the stored answer is replayed (`replayed=True`).

`if_free` bookings check the slot against availability no older than `max_staleness`
(AvailabilityService asks Google live when the copy is older) and book while holding the
integration's slot lock: an asyncio lock in this process and, on PostgreSQL, a transaction
advisory lock across processes, so two bookings of one slot cannot both pass the check. Busy
time inside the slot is SlotBusy (with the intervals); a calendar whose busy time is not known
fresh (Google failing, no copy) is AvailabilityUnknown: never booked blind.

The booked event is written into the local synced copy at once (and a sync requested), so this
integration's free/busy shows it immediately. Only events the gateway booked for this tenant and
integration (a booking row names them) may be listed, changed or cancelled; others are
EventNotFound. Google failures propagate as the GoogleError tree (callers map them:
`gateway.http.lookup.google_problem`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from gateway.availability.intervals import Interval, clip, merge, subtract
from gateway.availability.service import AvailabilityService, FreeBusy
from gateway.booking.errors import (
    AvailabilityUnknown,
    EtagMismatch,
    EventNotFound,
    IdempotencyKeyInvalid,
    IdempotencyKeyReused,
    SlotBusy,
)
from gateway.booking.idempotency import check_idempotency_key, google_event_id
from gateway.booking.request import (
    EVENT_ID,
    BookingRequest,
    EventChange,
    known_time_zone,
)
from gateway.booking.store import DELETED, PENDING, BookingRow, BookingStore
from gateway.clock import rfc3339, utc_now
from gateway.connections.errors import IntegrationInactive
from gateway.connections.model import Capability, Integration
from gateway.errors import Forbidden, GatewayError, InvalidInput, NotFound
from gateway.google.calendar import CalendarClient
from gateway.google.errors import (
    DuplicateEvent,
    EventGone,
    EventParseError,
    GoogleNotFound,
    PreconditionFailed,
    TransientGoogleError,
    UnexpectedGoogleResponse,
)
from gateway.google.events import (
    GATEWAY_PROPERTY,
    EventResource,
    is_cancelled,
)
from gateway.sync.calendar_store import CalendarRow
from gateway.sync.engine import ManagedTokenSource, SyncEngine, TokenKeeper

log = logging.getLogger(__name__)

Json = dict[str, Any]
# When availability cannot be known and Google gave no Retry-After.
DEFAULT_RETRY_AFTER_S = 5
# events.list page size when listing the gateway's events (Google's maximum is 2500).
LIST_PAGE_SIZE = 250


def _resource(event: Json) -> EventResource:
    """Google's answer about one event, read by `gateway.google.events` (the one reader)."""
    try:
        return EventResource.parse(event)
    except EventParseError:
        raise UnexpectedGoogleResponse("Google answered an unreadable event time") from None


@dataclass(frozen=True)
class BookedEvent:
    """What a booking answers (and a replay repeats): ids, times (UTC), etag, status, link."""

    id: str
    calendar_id: str
    etag: str | None
    start: datetime
    end: datetime
    status: str
    html_link: str | None

    @classmethod
    def from_google(cls, event: Json, calendar_id: str) -> BookedEvent:
        return cls.of(_resource(event), calendar_id)

    @classmethod
    def of(cls, event: EventResource, calendar_id: str) -> BookedEvent:
        return cls(
            id=event.id,
            calendar_id=calendar_id,
            etag=event.etag,
            start=event.start,
            end=event.end,
            status=event.status,
            html_link=event.html_link,
        )

    @classmethod
    def from_json(cls, data: Json) -> BookedEvent:
        """From `to_json()` (a stored answer)."""
        return cls(
            id=data["id"],
            calendar_id=data["calendar_id"],
            etag=data["etag"],
            start=datetime.fromisoformat(data["start"]),
            end=datetime.fromisoformat(data["end"]),
            status=data["status"],
            html_link=data["html_link"],
        )

    def to_json(self) -> Json:
        return {
            "id": self.id,
            "calendar_id": self.calendar_id,
            "etag": self.etag,
            "start": rfc3339(self.start),
            "end": rfc3339(self.end),
            "status": self.status,
            "html_link": self.html_link,
        }


@dataclass(frozen=True)
class BookingResult:
    """`replayed`: the event was booked by an earlier request with the same key."""

    event: BookedEvent
    replayed: bool


@dataclass(frozen=True)
class EventDetail:
    """An event the gateway booked, in full (as Google has it now)."""

    event: BookedEvent
    summary: str | None
    description: str | None
    location: str | None
    attendees: list[Json]
    time_zone: str | None
    created: str | None
    updated: str | None

    def __repr__(self) -> str:
        return f"EventDetail(id={self.event.id!r})"

    @classmethod
    def from_google(cls, event: Json, calendar_id: str) -> EventDetail:
        resource = _resource(event)
        return cls(
            event=BookedEvent.of(resource, calendar_id),
            summary=resource.summary,
            description=resource.description,
            location=resource.location,
            attendees=[
                {"email": a.email, "response_status": a.response_status} for a in resource.attendees
            ],
            time_zone=resource.time_zone,
            created=resource.created,
            updated=resource.updated,
        )

    def to_json(self) -> Json:
        return {
            **self.event.to_json(),
            "summary": self.summary,
            "description": self.description,
            "location": self.location,
            "attendees": self.attendees,
            "time_zone": self.time_zone,
            "created": self.created,
            "updated": self.updated,
        }


@dataclass
class _Lock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class BookingService:
    """Idempotent booking, and changing and cancelling what was booked (see the module doc).

    `max_staleness` bounds how old the availability an if_free booking is checked against may
    be; `nudge` wakes this process's sync scheduler for a calendar just written; `max_locked`
    bounds how many slot locks (each a database connection on PostgreSQL) are held at once.
    """

    def __init__(
        self,
        *,
        store: BookingStore,
        client: CalendarClient,
        tokens: TokenKeeper,
        sync: SyncEngine,
        availability: AvailabilityService,
        max_staleness: timedelta,
        clock: Callable[[], datetime] = utc_now,
        nudge: Callable[[str], None] | None = None,
        max_locked: int = 4,
    ) -> None:
        self._store = store
        self._client = client
        self._tokens = tokens
        self._sync = sync
        self._availability = availability
        self._max_staleness = max_staleness
        self._clock = clock
        self._nudge = nudge
        self._locks: dict[str, _Lock] = {}
        # A held slot lock keeps a database connection (PostgreSQL) while the booking needs
        # another: bounding how many are held at once keeps the pool from running dry.
        self._locked = asyncio.Semaphore(max_locked)

    def __repr__(self) -> str:
        return f"BookingService(max_staleness={self._max_staleness!r})"

    # -- booking ------------------------------------------------------------------------------

    async def book(
        self,
        integration: Integration,
        tenant_id: str,
        idempotency_key: str,
        request: BookingRequest,
    ) -> BookingResult:
        """Book `request` once for this key. Raises IdempotencyKeyInvalid, IdempotencyKeyReused,
        SlotBusy, AvailabilityUnknown, InvalidInput (unknown time zone or calendar),
        IntegrationInactive, Forbidden (insufficient_google_scope), NotFound (another tenant's
        integration) and GoogleError."""
        try:
            check_idempotency_key(idempotency_key)
        except ValueError as exc:
            raise IdempotencyKeyInvalid(str(exc)) from None
        self._check(integration, tenant_id)
        await self._check_zone(request.time_zone)
        calendar = await self._calendar(integration, request.calendar_id)
        event_id = google_event_id(tenant_id, integration.id, idempotency_key)
        fingerprint = request.fingerprint()
        # Fast path for a repeated request: no lock, no Google call.
        existing = await self._store.get(tenant_id, integration.id, idempotency_key)
        if existing is not None:
            replay = self._replay(existing, fingerprint)
            if replay is not None:
                return replay
        async with self._slot_lock(integration.id):
            row, claimed = await self._store.claim(
                tenant_id=tenant_id,
                integration_id=integration.id,
                key=idempotency_key,
                google_event_id=event_id,
                google_calendar_id=calendar.google_calendar_id,
                body_sha256=fingerprint,
                now=self._clock(),
            )
            if not claimed:
                replay = self._replay(row, fingerprint)
                if replay is not None:
                    return replay
                # Pending: an earlier attempt may have reached Google. Ask before booking.
                found = await self._find(integration, calendar, event_id)
                if found is not None:
                    return await self._created(
                        integration, idempotency_key, calendar, found, replayed=True
                    )
            try:
                if request.if_free:
                    await self._check_free(integration, request)
                try:
                    event = await self._client.insert_event(
                        self._tokens_for(integration),
                        integration.id,
                        calendar.google_calendar_id,
                        request.google_body(event_id, integration.owner_tag),
                        send_updates=request.send_updates,
                    )
                    replayed = False
                except DuplicateEvent:
                    # An earlier attempt created it and its answer never came back.
                    event = await self._client.get_event(
                        self._tokens_for(integration),
                        integration.id,
                        calendar.google_calendar_id,
                        event_id,
                    )
                    replayed = True
            except GatewayError as exc:
                if not isinstance(exc, TransientGoogleError | UnexpectedGoogleResponse):
                    # Nothing was created (busy slot, refused request): the key is free again.
                    await self._store.forget(tenant_id, integration.id, idempotency_key)
                raise
            return await self._created(
                integration, idempotency_key, calendar, event, replayed=replayed
            )

    def _replay(self, row: BookingRow, fingerprint: str) -> BookingResult | None:
        if row.body_sha256 != fingerprint:
            raise IdempotencyKeyReused()
        if row.state != PENDING and row.response is not None:
            return BookingResult(BookedEvent.from_json(row.response), replayed=True)
        return None

    async def _find(
        self, integration: Integration, calendar: CalendarRow, event_id: str
    ) -> Json | None:
        try:
            return await self._client.get_event(
                self._tokens_for(integration), integration.id, calendar.google_calendar_id, event_id
            )
        except GoogleNotFound:
            return None

    async def _freebusy(self, integration: Integration, window: Interval) -> FreeBusy:
        try:
            # Never an answer shared with an earlier question: it may predate the booking
            # made under this lock a moment ago.
            return await self._availability.freebusy(
                integration, window, max_staleness=self._max_staleness, share=False
            )
        except TransientGoogleError as exc:
            retry = exc.retry_after_s if exc.retry_after_s is not None else DEFAULT_RETRY_AFTER_S
            raise AvailabilityUnknown(max(1, int(retry))) from None

    async def _check_free(self, integration: Integration, request: BookingRequest) -> None:
        answer = await self._freebusy(integration, Interval(request.start, request.end))
        if answer.busy:
            conflicts = [{"start": rfc3339(b.start), "end": rfc3339(b.end)} for b in answer.busy]
            raise SlotBusy(conflicts)
        if not answer.complete:
            raise AvailabilityUnknown(DEFAULT_RETRY_AFTER_S)

    async def _created(
        self,
        integration: Integration,
        key: str,
        calendar: CalendarRow,
        event: Json,
        *,
        replayed: bool,
    ) -> BookingResult:
        booked = BookedEvent.from_google(event, calendar.id)
        await self._store.mark_created(
            integration.tenant_id, integration.id, key, booked.to_json(), self._clock()
        )
        await self._written(integration, calendar, event)
        log.info(
            "booked: integration=%s calendar=%s replayed=%s", integration.id, calendar.id, replayed
        )
        return BookingResult(booked, replayed)

    async def _written(self, integration: Integration, calendar: CalendarRow, event: Json) -> None:
        """Show the change in the local copy now; the booking stands even if this fails (the
        requested sync, or the next poll, brings it)."""
        self._availability.forget_live_answers(calendar.integration_id)
        try:
            await self._sync.record_written(calendar.id, [event], owner_tag=integration.owner_tag)
        except (SQLAlchemyError, GatewayError) as exc:
            log.warning(
                "booked event not merged locally: calendar=%s error=%s",
                calendar.id,
                type(exc).__name__,
            )
        if self._nudge is not None:
            self._nudge(calendar.id)

    # -- listing, changing, cancelling ---------------------------------------------------------

    async def list_events(
        self, integration: Integration, tenant_id: str, window: Interval
    ) -> list[EventDetail]:
        """The events this gateway booked on the integration's calendars overlapping `window`,
        in full, as Google has them now (sorted by start). Raises like `book`."""
        self._check(integration, tenant_id)
        out: list[EventDetail] = []
        for calendar in await self._calendars(integration):
            pages = self._client.event_pages(
                self._tokens_for(integration),
                integration.id,
                calendar.google_calendar_id,
                privateExtendedProperty=f"{GATEWAY_PROPERTY}={integration.owner_tag}",
                timeMin=rfc3339(window.start),
                timeMax=rfc3339(window.end),
                singleEvents=True,
                maxResults=LIST_PAGE_SIZE,
            )
            async for page in pages:
                for item in page.get("items") or []:
                    if isinstance(item, dict) and not is_cancelled(item):
                        out.append(EventDetail.from_google(item, calendar.id))
        out.sort(key=lambda d: (d.event.start, d.event.id))
        return out

    async def update(
        self,
        integration: Integration,
        tenant_id: str,
        event_id: str,
        change: EventChange,
        *,
        if_match: str | None = None,
        if_free: bool = False,
    ) -> BookedEvent:
        """Patch an event this gateway booked; with `if_match` (its etag) only if unchanged
        since (else EtagMismatch). With `if_free`, a move is checked first, under the slot
        lock bookings take, against fresh availability ignoring the meeting itself (SlotBusy
        with the conflicts, AvailabilityUnknown). Raises EventNotFound for any other event."""
        self._check(integration, tenant_id)
        await self._check_zone(change.time_zone)
        row, calendar = await self._booked(integration, tenant_id, event_id)
        if row.state == DELETED:
            raise EventNotFound()
        if if_free and change.start is not None and change.end is not None:
            async with self._slot_lock(integration.id):
                await self._check_move(integration, row.google_calendar_id, event_id, change)
                return await self._patch(integration, calendar, row, event_id, change, if_match)
        return await self._patch(integration, calendar, row, event_id, change, if_match)

    async def _check_move(
        self, integration: Integration, google_calendar_id: str, event_id: str, change: EventChange
    ) -> None:
        """SlotBusy unless [change.start, change.end) is free apart from the meeting itself.

        Busy time is merged across events, so the meeting's own current time is taken out of
        it and the other events' blocks inside that span are put back from the synced copy
        (per event there)."""
        assert change.start is not None and change.end is not None
        window = Interval(change.start, change.end)
        try:
            current = await self._client.get_event(
                self._tokens_for(integration), integration.id, google_calendar_id, event_id
            )
        except (GoogleNotFound, EventGone):
            raise EventNotFound() from None
        answer = await self._freebusy(integration, window)
        busy = answer.busy
        held = _resource(current)
        own = clip([Interval(held.start, held.end)], window)
        if own and busy:
            others: list[Interval] = []
            for cal in await self._calendars(integration):
                for part in own:
                    blocks = await self._sync.store.busy_between(
                        cal.id, part.start, part.end, except_event=event_id
                    )
                    others.extend(clip((Interval(s, e) for s, e in blocks), part))
            busy = merge([*subtract(busy, own), *others])
        if busy:
            raise SlotBusy([{"start": rfc3339(b.start), "end": rfc3339(b.end)} for b in busy])
        if not answer.complete:
            raise AvailabilityUnknown(DEFAULT_RETRY_AFTER_S)

    async def _patch(
        self,
        integration: Integration,
        calendar: CalendarRow,
        row: BookingRow,
        event_id: str,
        change: EventChange,
        if_match: str | None,
    ) -> BookedEvent:
        try:
            event = await self._client.patch_event(
                self._tokens_for(integration),
                integration.id,
                row.google_calendar_id,
                event_id,
                change.google_patch(),
                if_match=if_match,
                send_updates=change.send_updates,
            )
        except PreconditionFailed:
            raise EtagMismatch() from None
        except (GoogleNotFound, EventGone):
            raise EventNotFound() from None
        await self._written(integration, calendar, event)
        return BookedEvent.from_google(event, calendar.id)

    async def cancel(
        self, integration: Integration, tenant_id: str, event_id: str, *, send_updates: str = "none"
    ) -> None:
        """Delete an event this gateway booked; deleting it again is no error. Raises
        EventNotFound for any other event."""
        self._check(integration, tenant_id)
        row, calendar = await self._booked(integration, tenant_id, event_id)
        if row.state == DELETED:
            return
        # Gone already (deleted by the user, or never created by a pending attempt): done.
        with suppress(EventGone, GoogleNotFound):
            await self._client.delete_event(
                self._tokens_for(integration),
                integration.id,
                row.google_calendar_id,
                event_id,
                send_updates=send_updates,
            )
        await self._store.mark_event(integration.id, event_id, DELETED, self._clock())
        await self._written(integration, calendar, {"id": event_id, "status": "cancelled"})

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _check(integration: Integration, tenant_id: str) -> None:
        if integration.tenant_id != tenant_id:
            raise NotFound("no such integration", code="integration_not_found")
        if not integration.usable:
            raise IntegrationInactive(integration.status, reason=integration.reauth_reason)
        if Capability.BOOKING not in integration.capabilities:
            raise Forbidden(
                "the user did not grant the calendar permission booking needs; ask them to "
                "connect again and allow it",
                code="insufficient_google_scope",
            )

    @staticmethod
    async def _check_zone(name: str | None) -> None:
        # Zone rules are files: read off the event loop.
        if name is not None and not await asyncio.to_thread(known_time_zone, name):
            raise InvalidInput(
                "time_zone: unknown time zone; use an IANA name such as Europe/Berlin",
                code="invalid_field",
                extra={"field": "time_zone"},
            )

    def _tokens_for(self, integration: Integration) -> ManagedTokenSource:
        return ManagedTokenSource(self._tokens, integration.id)

    async def _calendars(self, integration: Integration) -> list[CalendarRow]:
        rows = await self._sync.store.calendars_of(integration.id)
        if not rows:
            # Never synced yet: learn its calendars (one Google call); the scheduler syncs
            # them from then on.
            rows = await self._sync.ensure_calendars(integration.id)
        if not rows:
            raise UnexpectedGoogleResponse("Google names no primary calendar for this account")
        return rows

    async def _calendar(self, integration: Integration, calendar_id: str | None) -> CalendarRow:
        rows = await self._calendars(integration)
        if calendar_id is None:
            return rows[0]  # the primary: the first one learnt
        for row in rows:
            if row.id == calendar_id:
                return row
        raise InvalidInput(
            "calendar_id: not a calendar of this integration",
            code="invalid_field",
            extra={"field": "calendar_id"},
        )

    async def _booked(
        self, integration: Integration, tenant_id: str, event_id: str
    ) -> tuple[BookingRow, CalendarRow]:
        """The booking row of `event_id` and its calendar, or EventNotFound."""
        row = (
            await self._store.by_event(tenant_id, integration.id, event_id)
            if EVENT_ID.match(event_id)
            else None
        )
        if row is None:
            raise EventNotFound()
        for calendar in await self._calendars(integration):
            if calendar.google_calendar_id == row.google_calendar_id:
                return row, calendar
        raise EventNotFound()

    @asynccontextmanager
    async def _slot_lock(self, integration_id: str) -> AsyncIterator[None]:
        entry = self._locks.setdefault(integration_id, _Lock())
        entry.users += 1
        try:
            async with entry.lock, self._locked, self._store.slot_lock(integration_id):
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[integration_id]
