"""Calendar data of the emulated accounts: calendars, events, sync tokens and push channels.

This is Google's side of the world, with Google's semantics and no HTTP: handlers in
`emulator/calendar_api.py` parse requests, call these verbs and render what they return. Errors
are raised as `GoogleApiError` because the store speaks Google's vocabulary (`duplicate`,
`conditionNotMet`, `fullSyncRequired`...).

Change tracking: every write takes the next store-wide `version`; an event remembers the version
of its last change. A sync token records the version at which a listing started, so an
incremental sync returns exactly the records with a newer version (deleted ones as tombstones).
Paging is keyset-based (the page token holds the sort key of the last item served), so an event
changed while a client is paging is never skipped: it is served later in this listing or in the
next incremental sync.

Time comes from `clock` (seconds since the epoch; `calendar_api.setup` binds it to the emulator
state's clock) and ids from `rng`, so tests are deterministic without sleeping.
"""

from __future__ import annotations

import base64
import bisect
import copy
import hashlib
import json
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from dateutil.rrule import rruleset

from emulator.errors import GoogleApiError
from emulator.recurrence import (
    RecurrenceError,
    TimeValueError,
    build_ruleset,
    format_datetime,
    format_utc_millis,
    instance_suffix,
    occurrences,
    parse_date,
    parse_datetime,
    parse_instance_suffix,
    zone,
)

Json = dict[str, Any]

BASE32HEX = frozenset("abcdefghijklmnopqrstuv0123456789")
EVENT_STATUSES = ("confirmed", "tentative", "cancelled")
TRANSPARENCIES = ("opaque", "transparent")
VISIBILITIES = ("default", "public", "private", "confidential")
EVENT_TYPES = ("default", "birthday", "focusTime", "fromGmail", "outOfOffice", "workingLocation")
# Fields the server owns: a client may send them (the official client echoes whole resources on
# update) but they are never taken from the request.
READ_ONLY_FIELDS = ("kind", "etag", "htmlLink", "created", "updated", "creator", "iCalUID")
PRIMARY_DEFAULT_REMINDERS: list[Json] = [{"method": "popup", "minutes": 10}]


def not_found() -> GoogleApiError:
    return GoogleApiError(404, "notFound", "Not Found")


def invalid(message: str, *, location: str | None = None) -> GoogleApiError:
    return GoogleApiError(
        400,
        "invalid",
        message,
        location=location,
        location_type="parameter" if location else None,
    )


def full_sync_required() -> GoogleApiError:
    """The exact 410 Google answers for a sync token it no longer honours."""
    return GoogleApiError(
        410,
        "fullSyncRequired",
        "Sync token is no longer valid, a full sync is required.",
        domain="calendar",
        location="syncToken",
        location_type="parameter",
    )


def time_range_empty(location: str | None = "timeMax") -> GoogleApiError:
    return GoogleApiError(
        400,
        "timeRangeEmpty",
        "The specified time range is empty.",
        domain="calendar",
        location=location,
        location_type="parameter" if location else None,
    )


def _b64(data: Json) -> str:
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(token: str) -> Json | None:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(slots=True)
class EventRecord:
    """One stored event (a single event, a recurring master or an exception of one).

    `body` is the resource as Google stores it (dateTimes as sent); `start`/`end` are the absolute
    instants used for filtering (all-day values at midnight in the calendar's zone)."""

    body: Json
    version: int
    start: datetime
    end: datetime
    all_day: bool
    tz: tzinfo
    rules: rruleset | None = None
    series_start: datetime | None = None  # in the series' kind: aware, or naive for all-day

    @property
    def id(self) -> str:
        return str(self.body["id"])

    @property
    def cancelled(self) -> bool:
        return self.body.get("status") == "cancelled"

    @property
    def recurring_event_id(self) -> str | None:
        value = self.body.get("recurringEventId")
        return str(value) if value else None


@dataclass
class Calendar:
    """One calendar. `generation` is bumped to invalidate every sync token issued for it."""

    id: str
    owner: str
    summary: str
    time_zone: str
    primary: bool
    description: str | None = None
    events: dict[str, EventRecord] = field(default_factory=dict)
    generation: int = 0
    updated_s: float = 0.0
    last_etag: int = 0

    @property
    def tz(self) -> ZoneInfo:
        return zone(self.time_zone) or ZoneInfo("UTC")


@dataclass
class ListQuery:
    """events.list / events.instances options after the discovery layer checked their types."""

    max_results: int = 250
    page_token: str | None = None
    sync_token: str | None = None
    time_min: datetime | None = None
    time_max: datetime | None = None
    updated_min: datetime | None = None
    single_events: bool = False
    show_deleted: bool = False
    order_by: str | None = None
    time_zone: str | None = None
    q: str | None = None
    ical_uid: str | None = None
    private_properties: list[str] = field(default_factory=list)
    shared_properties: list[str] = field(default_factory=list)
    event_types: list[str] = field(default_factory=list)
    original_start: datetime | None = None  # events.instances: only the instance starting here

    def signature(self) -> str:
        """What a page token is bound to: every option except the paging ones."""
        parts = [
            self.sync_token,
            self.time_min.isoformat() if self.time_min else None,
            self.time_max.isoformat() if self.time_max else None,
            self.updated_min.isoformat() if self.updated_min else None,
            self.single_events,
            self.show_deleted,
            self.order_by,
            self.time_zone,
            self.q,
            self.ical_uid,
            self.original_start.isoformat() if self.original_start else None,
            sorted(self.private_properties),
            sorted(self.shared_properties),
            sorted(self.event_types),
        ]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


@dataclass
class Channel:
    """A push channel from events.watch."""

    id: str
    resource_id: str
    resource_uri: str
    calendar_id: str
    owner: str
    address: str
    token: str | None
    expiration_ms: int
    params: dict[str, str]
    last_message_number: int = 0
    stopped: bool = False


@dataclass
class PushFaults:
    """Deterministic push misbehaviour: Google does not guarantee delivery, so clients must cope
    with lost and repeated notifications."""

    drop_next: int = 0
    duplicate_next: int = 0


@dataclass
class LoadReport:
    """What `load_events_payload` did. Recorded pages can repeat an id (the anonymised northworld
    recording does); the store keeps the last item with that id and lists the repeats here."""

    loaded: list[str]
    duplicate_ids: list[str]


class CalendarStore:
    """Calendars, events, sync tokens and push channels of every emulated user."""

    def __init__(self) -> None:
        self.clock: Callable[[], float] = time.time
        # Ids need to look like Google's, not be secret; tests replace it with a seeded one.
        self.rng: random.Random = random.Random()  # noqa: S311
        self.calendars: dict[str, Calendar] = {}
        self.owned: dict[str, list[str]] = {}  # owner email -> calendar ids, primary first
        self.version = 0
        # Paging knobs: every k-th page (k >= 2) is served empty with a nextPageToken, and pages
        # never hold more than `max_page_items`; both are legal Google behaviour clients must take.
        self.empty_page_every = 0
        self.max_page_items: int | None = None
        self.sync_token_max_age_s = 30 * 86400
        self.updated_min_max_age_s = 28 * 86400
        # singleEvents expansion without timeMax stops this far after now.
        self.expansion_horizon_days = 730
        # Reported by users, not documented: freeBusy refuses ranges beyond about three months.
        self.freebusy_max_range_days = 92
        self.channels: dict[str, Channel] = {}
        self.push_faults = PushFaults()
        self.channel_default_lifetime_s = 604_799
        self.channel_max_lifetime_s = 30 * 86400
        # Google requires https webhooks; tests set this to allow http://127.0.0.1 / localhost.
        self.allow_insecure_loopback_webhooks = False
        self.listeners: list[Callable[[str], None]] = []
        self._selection_cache: dict[tuple[Any, ...], list[tuple[tuple[str, ...], Json, bool]]] = {}
        # Where a new primary calendar takes its zone from; setup() points it at the users.
        self.user_time_zone: Callable[[str], str | None] = lambda _email: None

    def reset_faults(self) -> None:
        """Back to Google's ordinary behaviour: no paging quirks, no push faults."""
        self.empty_page_every = 0
        self.max_page_items = None
        self.push_faults = PushFaults()

    def clear(self) -> None:
        """Forget every calendar, event and channel (users are the OAuth side's business)."""
        self.calendars.clear()
        self.owned.clear()
        self.channels.clear()
        self._selection_cache.clear()
        self.reset_faults()

    # ---------------------------------------------------------------- calendars

    def ensure_user(self, email: str, time_zone: str | None = None) -> Calendar:
        """The user's primary calendar (id = email), created on first use in `time_zone`
        (default: the scripted user's zone via `user_time_zone`, else UTC)."""
        cal = self.calendars.get(email)
        if cal is None:
            cal = Calendar(
                id=email,
                owner=email,
                summary=email,
                time_zone=time_zone or self.user_time_zone(email) or "UTC",
                primary=True,
                updated_s=self.clock(),
            )
            self.calendars[email] = cal
            self.owned.setdefault(email, []).insert(0, email)
        return cal

    def add_calendar(
        self,
        owner: str,
        summary: str,
        time_zone: str = "UTC",
        calendar_id: str | None = None,
    ) -> Calendar:
        """A secondary calendar owned by `owner` (id like `...@group.calendar.google.com`)."""
        if zone(time_zone) is None:
            raise invalid(f"Invalid time zone: {time_zone}")
        self.ensure_user(owner)
        cal_id = calendar_id or f"{self._new_id()}@group.calendar.google.com"
        if cal_id in self.calendars:
            raise GoogleApiError(409, "duplicate", "The requested identifier already exists.")
        cal = Calendar(
            id=cal_id,
            owner=owner,
            summary=summary,
            time_zone=time_zone,
            primary=False,
            updated_s=self.clock(),
        )
        self.calendars[cal_id] = cal
        self.owned[owner].append(cal_id)
        return cal

    def calendars_of(self, email: str) -> list[Calendar]:
        return [self.calendars[c] for c in self.owned.get(email, [])]

    def resolve(self, email: str, calendar_id: str) -> Calendar:
        """A calendar the caller may read and write; `primary` is the caller's own."""
        if calendar_id == "primary":
            calendar_id = email
        cal = self.calendars.get(calendar_id)
        if cal is None or cal.owner != email:
            raise not_found()
        return cal

    def invalidate_sync_tokens(self, email: str) -> int:
        """Make every sync token of the user's calendars answer 410. Returns calendars touched."""
        cals = self.calendars_of(email)
        for cal in cals:
            cal.generation += 1
        return len(cals)

    # ---------------------------------------------------------------- change tracking

    def _new_id(self) -> str:
        """A 26-character base32hex id, the shape of Google's generated event ids."""
        return base64.b32hexencode(self.rng.randbytes(17)).decode().lower()[:26]

    def _stamp(self, cal: Calendar, body: Json) -> int:
        """Give a write its version, `updated` and a fresh etag (unique even with a frozen
        clock, like Google's microsecond-based etags)."""
        self.version += 1
        now = self.clock()
        etag = max(cal.last_etag + 1, int(now * 1_000_000))
        cal.last_etag = etag
        cal.updated_s = now
        body["etag"] = f'"{etag}"'
        body["updated"] = format_utc_millis(now)
        return self.version

    def notify(self, calendar_id: str) -> None:
        """Tell listeners (push delivery) that a calendar changed."""
        for listener in list(self.listeners):
            listener(calendar_id)

    # ---------------------------------------------------------------- event validation

    def _parse_when(
        self, cal: Calendar, body: Json, name: str
    ) -> tuple[datetime, bool, tzinfo, datetime]:
        """(absolute instant, all_day, zone, value in the series' kind) of `start`/`end`."""
        value = body.get(name)
        if not isinstance(value, dict) or not (value.get("date") or value.get("dateTime")):
            raise GoogleApiError(400, "required", f"Missing {name} time.")
        tz_name = value.get("timeZone")
        tz: tzinfo = cal.tz
        if tz_name:
            found = zone(str(tz_name))
            if found is None:
                raise invalid(f"Invalid time zone definition for {name} time.")
            tz = found
        if value.get("date") and value.get("dateTime"):
            raise invalid("Start and end times must either both be date or both be dateTime.")
        try:
            if value.get("date"):
                day = parse_date(str(value["date"]))
                local = datetime(day.year, day.month, day.day)
                return local.replace(tzinfo=cal.tz).astimezone(UTC), True, cal.tz, local
            moment = parse_datetime(str(value["dateTime"]), offset_required=False)
        except TimeValueError as exc:
            raise invalid(f"Invalid value for: {exc.message}") from exc
        if moment.tzinfo is None:
            if not tz_name:
                raise GoogleApiError(
                    400, "required", f"Missing time zone definition for {name} time."
                )
            moment = moment.replace(tzinfo=tz)
        return moment.astimezone(UTC), False, tz, moment.astimezone(tz)

    def _check_enums(self, body: Json) -> None:
        for name, allowed in (
            ("status", EVENT_STATUSES),
            ("transparency", TRANSPARENCIES),
            ("visibility", VISIBILITIES),
            ("eventType", EVENT_TYPES),
        ):
            value = body.get(name)
            if value is not None and value not in allowed:
                raise invalid(f"Invalid value for {name}: {value}")
        for attendee in body.get("attendees") or []:
            if not isinstance(attendee, dict) or not attendee.get("email"):
                raise GoogleApiError(400, "required", "Missing attendee email.")
        reminders = body.get("reminders") or {}
        overrides = reminders.get("overrides") or []
        if reminders.get("useDefault") and overrides:
            raise GoogleApiError(
                400,
                "cannotUseDefaultRemindersAndSpecifyOverride",
                "Cannot specify both default reminders and overrides at the same time.",
            )
        if len(overrides) > 5:
            raise GoogleApiError(
                400, "tooManyReminders", "The maximum number of override reminders is 5."
            )
        for override in overrides:
            minutes = override.get("minutes") if isinstance(override, dict) else None
            if not isinstance(minutes, int) or not 0 <= minutes <= 40320:
                raise invalid("Invalid reminder minutes: must be between 0 and 40320.")

    def _make_record(self, cal: Calendar, body: Json, version: int) -> EventRecord:
        """Validate times and recurrence of a body and build its record."""
        if body.get("status") == "cancelled" and "start" not in body:
            # Tombstones and cancelled exceptions carry no times of their own.
            anchor = body.get("originalStartTime")
            instant, all_day = datetime(1970, 1, 1, tzinfo=UTC), False
            tz: tzinfo = cal.tz
            if isinstance(anchor, dict):
                probe = {"start": anchor}
                instant, all_day, tz, _ = self._parse_when(cal, probe, "start")
            return EventRecord(body, version, instant, instant, all_day, tz)
        start, start_all_day, tz, series_start = self._parse_when(cal, body, "start")
        end, end_all_day, _, _ = self._parse_when(cal, body, "end")
        if start_all_day != end_all_day:
            raise invalid("Start and end times must either both be date or both be dateTime.")
        # A timed event may last zero seconds; an all-day one must cover at least one day.
        if end < start or (start_all_day and end == start):
            raise time_range_empty(location=None)
        record = EventRecord(body, version, start, end, start_all_day, tz)
        recurrence = body.get("recurrence")
        if recurrence and not body.get("recurringEventId"):
            if not start_all_day and not (body.get("start") or {}).get("timeZone"):
                raise GoogleApiError(
                    400, "required", "Missing time zone definition for start time."
                )
            try:
                record.rules = build_ruleset(list(recurrence), series_start, tz)
            except RecurrenceError as exc:
                raise invalid("Invalid recurrence rule.") from exc
            record.series_start = series_start
        return record

    def _check_id(self, event_id: Any) -> str:
        if (
            not isinstance(event_id, str)
            or not 5 <= len(event_id) <= 1024
            or not set(event_id) <= BASE32HEX
        ):
            raise invalid("Invalid resource id value.")
        return event_id

    def _server_fields(self, cal: Calendar, body: Json, event_id: str, created: str | None) -> Json:
        """Compose a stored resource in Google's field order with the server-owned fields."""
        owner_ref: Json = {"email": cal.owner, "self": True}
        organizer: Json = {"email": cal.id, "self": True}
        if not cal.primary:
            organizer["displayName"] = cal.summary
        eid = base64.b64encode(f"{event_id} {cal.id}".encode()).decode().rstrip("=")
        out: Json = {
            "kind": "calendar#event",
            "etag": "",
            "id": event_id,
            "status": body.get("status", "confirmed"),
            "htmlLink": f"https://www.google.com/calendar/event?eid={eid}",
            "created": created or format_utc_millis(self.clock()),
            "updated": "",
        }
        for key, value in body.items():
            if key not in out and key not in READ_ONLY_FIELDS and key != "organizer":
                out[key] = value
        # Creator, organizer and iCalUID are Google's on insert (events.import sets them);
        # `_replace` carries the existing ones over.
        out["creator"] = owner_ref
        out["organizer"] = organizer
        out["iCalUID"] = f"{event_id}@google.com"
        out.setdefault("sequence", 0)
        out.setdefault("reminders", {"useDefault": True})
        out.setdefault("eventType", "default")
        return out

    # ---------------------------------------------------------------- writes

    def insert_event(
        self, cal: Calendar, body: Json, *, notify: bool = True, owned: bool = False
    ) -> EventRecord:
        """events.insert: a client-chosen id is an idempotency key (409 when it exists).
        `owned=True` hands `body` over to the store (no defensive copy; bulk seeding)."""
        if not owned:
            body = copy.deepcopy(body)
        self._check_enums(body)
        if body.get("id") is not None:
            event_id = self._check_id(body["id"])
            if event_id in cal.events:
                raise GoogleApiError(409, "duplicate", "The requested identifier already exists.")
        else:
            event_id = self._new_id()
        # Exceptions of a series are created through the instance id, not by insert.
        for key in ("recurringEventId", "originalStartTime"):
            body.pop(key, None)
        stored = self._server_fields(cal, body, event_id, None)
        record = self._make_record(cal, stored, 0)
        record.version = self._stamp(cal, stored)
        cal.events[event_id] = record
        if notify:
            self.notify(cal.id)
        return record

    def _existing_or_instance(
        self, cal: Calendar, event_id: str
    ) -> tuple[EventRecord | None, Json]:
        """The stored record, or (None, virtual instance body) for an unmodified instance."""
        record = cal.events.get(event_id)
        if record is not None:
            return record, record.body
        instance = self._virtual_instance(cal, event_id)
        if instance is None:
            raise not_found()
        return None, instance

    def _virtual_instance(self, cal: Calendar, event_id: str) -> Json | None:
        master_id, sep, suffix = event_id.rpartition("_")
        if not sep:
            return None
        master = cal.events.get(master_id)
        if master is None or master.rules is None or master.series_start is None:
            return None
        original = parse_instance_suffix(suffix, master.tz, master.all_day)
        if original is None:
            return None
        second = timedelta(seconds=1)
        if master.all_day:
            # A one-second window around the original start finds exactly that occurrence.
            hits = occurrences(
                master.rules, master.series_start, second, original, original + second, limit=1
            )
            if next(hits, None) != original:
                return None
            return self._instance_body(master, original)
        # Occurrences in the series' zone compare by wall time (one tzinfo), and one whose wall
        # time falls in a DST gap (00:30 when clocks jump from 00:00 to 01:00) is the instant
        # the suffix names but another wall time: look a day around it, match the instant.
        day = timedelta(days=1)
        instant = original.astimezone(UTC)
        start = master.series_start
        near = occurrences(master.rules, start, second, original - day, original + day)
        if all(occ.astimezone(UTC) != instant for occ in near):
            return None
        return self._instance_body(master, original)

    def _instance_body(self, master: EventRecord, original: datetime) -> Json:
        duration = master.end - master.start
        body = {k: v for k, v in master.body.items() if k != "recurrence"}
        body["id"] = f"{master.id}_{instance_suffix(original, master.all_day)}"
        tz_name = (master.body.get("start") or {}).get("timeZone")
        if master.all_day:
            end_day = (original + duration).date()
            body["start"] = {"date": original.date().isoformat()}
            body["end"] = {"date": end_day.isoformat()}
            body["originalStartTime"] = {"date": original.date().isoformat()}
        else:
            start_local = original.astimezone(master.tz)
            # Add the duration in absolute time: a 1 h meeting stays 1 h across a DST change.
            end_local = (start_local.astimezone(UTC) + duration).astimezone(master.tz)
            end_tz = (master.body.get("end") or {}).get("timeZone") or tz_name
            body["start"] = {"dateTime": start_local.isoformat()}
            body["end"] = {"dateTime": end_local.isoformat()}
            body["originalStartTime"] = {"dateTime": start_local.isoformat()}
            if tz_name:
                body["start"]["timeZone"] = tz_name
                body["originalStartTime"]["timeZone"] = tz_name
            if end_tz:
                body["end"]["timeZone"] = end_tz
        body["recurringEventId"] = master.id
        return body

    def _check_etag(self, current: Json, if_match: str | None) -> None:
        if if_match and if_match.strip() != "*" and if_match.strip() != current.get("etag"):
            raise GoogleApiError(
                412,
                "conditionNotMet",
                "Precondition Failed",
                location="If-Match",
                location_type="header",
            )

    def _replace(self, cal: Calendar, event_id: str, new_body: Json, existing: Json) -> EventRecord:
        self._check_enums(new_body)
        stored = self._server_fields(cal, new_body, event_id, str(existing.get("created") or ""))
        stored["creator"] = existing.get("creator") or stored["creator"]
        stored["organizer"] = existing.get("organizer") or stored["organizer"]
        stored["iCalUID"] = existing.get("iCalUID") or stored["iCalUID"]
        for key in ("recurringEventId", "originalStartTime"):
            if key in existing:
                stored[key] = existing[key]
            else:
                stored.pop(key, None)
        if stored.get("status") != "cancelled" and "start" not in stored:
            raise GoogleApiError(400, "required", "Missing start time.")
        old_seq = int(existing.get("sequence") or 0)
        changed_time = any(existing.get(k) != stored.get(k) for k in ("start", "end", "recurrence"))
        if "sequence" not in new_body or int(new_body.get("sequence") or 0) <= old_seq:
            stored["sequence"] = old_seq + (1 if changed_time else 0)
        record = self._make_record(cal, stored, 0)
        record.version = self._stamp(cal, stored)
        cal.events[event_id] = record
        self.notify(cal.id)
        return record

    def update_event(
        self, cal: Calendar, event_id: str, body: Json, *, if_match: str | None = None
    ) -> EventRecord:
        """events.update (PUT): the body replaces the resource; server fields are kept."""
        _record, current = self._existing_or_instance(cal, event_id)
        self._check_etag(current, if_match)
        return self._replace(cal, event_id, copy.deepcopy(body), current)

    def patch_event(
        self, cal: Calendar, event_id: str, patch: Json, *, if_match: str | None = None
    ) -> EventRecord:
        """events.patch: objects merge recursively, arrays are replaced whole, null clears."""
        _record, current = self._existing_or_instance(cal, event_id)
        self._check_etag(current, if_match)
        merged = _merge(copy.deepcopy(current), patch)
        return self._replace(cal, event_id, merged, current)

    def respond(self, cal: Calendar, event_id: str, email: str, response: str) -> EventRecord:
        """An attendee answers the invitation from their own calendar (accepted, declined,
        tentative, needsAction): the event changes for the organizer as Google changes it."""
        if response not in ("accepted", "declined", "tentative", "needsAction"):
            raise invalid("Invalid attendee response status.", location="responseStatus")
        _record, current = self._existing_or_instance(cal, event_id)
        attendees = [dict(a) for a in current.get("attendees") or []]
        matching = [a for a in attendees if str(a.get("email", "")).lower() == email.lower()]
        if not matching:
            raise invalid("Not an attendee of this event.", location="email")
        for attendee in matching:
            attendee["responseStatus"] = response
        return self.patch_event(cal, event_id, {"attendees": attendees})

    def delete_event(self, cal: Calendar, event_id: str, *, if_match: str | None = None) -> None:
        """events.delete: the event becomes a tombstone; deleting it again is 410 `deleted`."""
        record, current = self._existing_or_instance(cal, event_id)
        self._check_etag(current, if_match)
        if record is not None and record.cancelled:
            raise GoogleApiError(410, "deleted", "Resource has been deleted")
        stored = (
            dict(current)
            if record is not None
            else self._server_fields(cal, current, event_id, None)
        )
        stored["status"] = "cancelled"
        if record is None:
            stored["creator"] = current.get("creator")
            stored["organizer"] = current.get("organizer")
        new = self._make_record(cal, stored, 0) if record is None else record
        new.body = stored
        new.version = self._stamp(cal, stored)
        cal.events[event_id] = new
        if record is not None and record.rules is not None:
            # Deleting a series deletes its exceptions too.
            for other in list(cal.events.values()):
                if other.recurring_event_id == event_id and not other.cancelled:
                    other.body = dict(other.body, status="cancelled")
                    other.version = self._stamp(cal, other.body)
        self.notify(cal.id)

    def get_event(self, cal: Calendar, event_id: str) -> Json:
        """events.get: deleted events are still returned, with status `cancelled`."""
        _, body = self._existing_or_instance(cal, event_id)
        return body

    # ---------------------------------------------------------------- reads

    def render(self, cal: Calendar, body: Json, tz: tzinfo, *, tombstone: bool = False) -> Json:
        """An event as Google sends it: dateTimes in the response zone (timeZone as sent), `self`
        flags on attendees, and only the guaranteed fields for tombstones."""
        if body.get("status") == "cancelled" and tombstone:
            out: Json = {"kind": "calendar#event", "etag": body.get("etag"), "id": body["id"]}
            out["status"] = "cancelled"
            if body.get("recurringEventId"):
                out["recurringEventId"] = body["recurringEventId"]
                if body.get("originalStartTime"):
                    out["originalStartTime"] = self._render_when(body["originalStartTime"], tz)
            return out
        out = dict(body)
        for key in ("start", "end", "originalStartTime"):
            if isinstance(out.get(key), dict):
                out[key] = self._render_when(out[key], tz)
        if out.get("attendees"):
            out["attendees"] = [
                dict(a, self=True) if a.get("email") == cal.owner and cal.primary else a
                for a in out["attendees"]
            ]
        return out

    def _render_when(self, value: Json, tz: tzinfo) -> Json:
        text = value.get("dateTime")
        if not text:
            return dict(value)
        try:
            # A stored value passed `parse_datetime` when it was written: the standard parser
            # reads almost all of them (the same instant) at a fraction of the cost.
            moment = datetime.fromisoformat(str(text))
        except ValueError:
            try:
                moment = parse_datetime(str(text), offset_required=False)
            except TimeValueError:
                return dict(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=zone(str(value.get("timeZone") or "")) or UTC)
        out = dict(value)
        out["dateTime"] = format_datetime(moment, tz)
        return out

    def _exceptions(self, cal: Calendar) -> dict[str, dict[str, EventRecord]]:
        index: dict[str, dict[str, EventRecord]] = {}
        for record in cal.events.values():
            master = record.recurring_event_id
            if master:
                index.setdefault(master, {})[record.id] = record
        return index

    def _expand(
        self,
        master: EventRecord,
        window_start: datetime | None,
        window_end: datetime,
        exceptions: dict[str, EventRecord],
    ) -> Iterator[tuple[Json, datetime]]:
        """Unmodified instances of a series overlapping the window (exceptions excluded)."""
        assert master.rules is not None and master.series_start is not None
        duration = master.end - master.start
        ws, we = self._series_window(master, window_start, window_end)
        for occ in occurrences(master.rules, master.series_start, duration, ws, we):
            instance_id = f"{master.id}_{instance_suffix(occ, master.all_day)}"
            if instance_id in exceptions:
                continue
            start = occ.replace(tzinfo=master.tz) if master.all_day else occ
            yield self._instance_body(master, occ), start.astimezone(UTC)

    @staticmethod
    def _series_window(
        master: EventRecord, window_start: datetime | None, window_end: datetime
    ) -> tuple[datetime | None, datetime]:
        """The window in the series' own kind: naive local times for an all-day series."""
        if not master.all_day:
            return window_start, window_end
        tz = master.tz
        ws = window_start.astimezone(tz).replace(tzinfo=None) if window_start else None
        return ws, window_end.astimezone(tz).replace(tzinfo=None)

    def _window_end(self, query: ListQuery) -> datetime:
        if query.time_max is not None:
            return query.time_max
        horizon = datetime.fromtimestamp(self.clock(), UTC) + timedelta(
            days=self.expansion_horizon_days
        )
        return horizon

    def _overlaps(self, record: EventRecord, query: ListQuery) -> bool:
        if record.rules is not None and record.series_start is not None:
            if query.time_min is None and query.time_max is None:
                return True
            # The first occurrence in the window, as `_expand` finds it (exceptions aside, as
            # there), without building its instance.
            ws, we = self._series_window(record, query.time_min, self._window_end(query))
            duration = record.end - record.start
            found = occurrences(record.rules, record.series_start, duration, ws, we)
            return next(found, None) is not None
        if query.time_max is not None and record.start >= query.time_max:
            return False
        # timeMin is exclusive on the END; a zero-length event at timeMin is outside.
        return not (query.time_min is not None and record.end <= query.time_min)

    def _matches(self, record: EventRecord, query: ListQuery) -> bool:
        body = record.body
        if query.ical_uid and body.get("iCalUID") != query.ical_uid:
            return False
        if query.event_types and body.get("eventType", "default") not in query.event_types:
            return False
        for kind, wanted in (
            ("private", query.private_properties),
            ("shared", query.shared_properties),
        ):
            props = ((body.get("extendedProperties") or {}).get(kind)) or {}
            for item in wanted:
                key, _, value = item.partition("=")
                if props.get(key) != value:
                    return False
        if query.q:
            haystack = " ".join(
                str(body.get(k) or "") for k in ("summary", "description", "location")
            ) + " ".join(str(a.get("email", "")) for a in body.get("attendees") or [])
            if not all(word in haystack.lower() for word in query.q.lower().split()):
                return False
        return True

    def _decode_sync_token(self, cal: Calendar, query: ListQuery) -> int:
        data = _unb64(query.sync_token or "")
        if (
            data is None
            or data.get("c") != cal.id
            or data.get("g") != cal.generation
            or not isinstance(data.get("v"), int)
            or not isinstance(data.get("t"), (int, float))
        ):
            raise full_sync_required()
        if self.clock() - float(data["t"]) > self.sync_token_max_age_s:
            raise full_sync_required()
        if bool(data.get("s")) != query.single_events:
            raise invalid(
                "The sync token was issued for a different value of singleEvents.",
                location="syncToken",
            )
        return int(data["v"])

    def _collect(
        self, cal: Calendar, query: ListQuery, since: int | None
    ) -> list[tuple[Json, datetime, bool]]:
        """(body, sort instant, is_tombstone) of everything the query selects, unsorted."""
        out: list[tuple[Json, datetime, bool]] = []
        exceptions = self._exceptions(cal)
        window_end = self._window_end(query)
        include_deleted = since is not None or query.show_deleted or query.updated_min is not None
        for record in cal.events.values():
            if since is not None and record.version <= since:
                continue
            if query.updated_min is not None:
                updated = parse_datetime(str(record.body.get("updated") or "1970-01-01T00:00:00Z"))
                if updated < query.updated_min:
                    continue
            if not self._matches(record, query):
                continue
            is_exception = record.recurring_event_id is not None
            if record.cancelled:
                # Cancelled exceptions show without showDeleted when instances are not expanded
                # (Google's documented exception); other deleted events only when asked.
                if not (include_deleted or (is_exception and not query.single_events)):
                    continue
                if since is None and not self._overlaps(record, query):
                    continue
                if query.single_events and record.rules is not None:
                    # A deleted series shows as cancelled instances to singleEvents clients.
                    for inst, start in self._expand(
                        record, query.time_min, window_end, exceptions.get(record.id, {})
                    ):
                        stub = {
                            "id": inst["id"],
                            "status": "cancelled",
                            "etag": record.body.get("etag"),
                            "recurringEventId": record.id,
                            "originalStartTime": inst["originalStartTime"],
                        }
                        out.append((stub, start, True))
                    continue
                out.append((record.body, record.start, True))
                continue
            if since is None and not self._overlaps(record, query):
                continue
            if query.single_events and record.rules is not None:
                for inst, start in self._expand(
                    record,
                    query.time_min if since is None else None,
                    window_end,
                    exceptions.get(record.id, {}),
                ):
                    out.append((inst, start, False))
                continue
            out.append((record.body, record.start, False))
        return out

    def list_events(self, cal: Calendar, query: ListQuery, *, master_id: str | None = None) -> Json:
        """events.list (and events.instances when `master_id` is given): one page."""
        if query.time_min and query.time_max and query.time_max <= query.time_min:
            raise time_range_empty()
        if query.order_by == "startTime" and not query.single_events:
            raise invalid(
                "The requested ordering is not available for the particular query.",
                location="orderBy",
            )
        if query.updated_min is not None and query.sync_token is None:
            age = self.clock() - query.updated_min.timestamp()
            if age > self.updated_min_max_age_s:
                raise GoogleApiError(
                    410,
                    "updatedMinTooLongAgo",
                    "The requested minimum modification time lies too far in the past.",
                    domain="calendar",
                    location="updatedMin",
                    location_type="parameter",
                )
        since = self._decode_sync_token(cal, query) if query.sync_token else None
        signature = query.signature() + (master_id or "")
        page_no, snapshot, after = 1, self.version, None
        if query.page_token:
            data = _unb64(query.page_token)
            if data is None or data.get("h") != signature:
                raise invalid("Invalid page token value.", location="pageToken")
            page_no, snapshot, after = int(data["n"]), int(data["s"]), data.get("k")

        keyed = self._sorted_selection(cal, query, since, master_id, signature)
        if after is not None:
            keyed = keyed[bisect.bisect_right(keyed, tuple(after), key=lambda item: item[0]) :]

        size = min(query.max_results, 2500)
        if self.max_page_items:
            size = min(size, self.max_page_items)
        empty = self.empty_page_every >= 2 and page_no % self.empty_page_every == 0 and bool(keyed)
        page = [] if empty else keyed[:size]
        more = empty or len(keyed) > len(page)

        tz = zone(query.time_zone or "") or cal.tz
        rendered = [self.render(cal, body, tz, tombstone=tomb) for _, body, tomb in page]
        envelope: Json = {
            "kind": "calendar#events",
            "etag": f'"{cal.last_etag or int(cal.updated_s * 1_000_000)}"',
            "summary": cal.summary,
        }
        if cal.description:
            envelope["description"] = cal.description
        envelope["updated"] = format_utc_millis(cal.updated_s)
        envelope["timeZone"] = cal.time_zone
        envelope["accessRole"] = "owner"
        envelope["defaultReminders"] = list(PRIMARY_DEFAULT_REMINDERS) if cal.primary else []
        if more:
            last_key = list(page[-1][0]) if page else after
            envelope["nextPageToken"] = _b64(
                {"n": page_no + 1, "s": snapshot, "k": last_key, "h": signature}
            )
        elif master_id is None:
            envelope["nextSyncToken"] = _b64(
                {
                    "c": cal.id,
                    "g": cal.generation,
                    "v": snapshot,
                    "t": self.clock(),
                    "s": query.single_events,
                }
            )
        envelope["items"] = rendered
        return envelope

    def _sorted_selection(
        self,
        cal: Calendar,
        query: ListQuery,
        since: int | None,
        master_id: str | None,
        signature: str,
    ) -> list[tuple[tuple[str, ...], Json, bool]]:
        """Everything the query selects, in page order. Cached while nothing is written, so
        paging through 10,000 events costs one selection, not one per page."""
        horizon_day = self._window_end(query).date().isoformat()
        key = (cal.id, signature, since, master_id, self.version, horizon_day)
        cached = self._selection_cache.get(key)
        if cached is not None:
            return cached
        if master_id is not None:
            items = self._instances(cal, master_id, query)
        else:
            items = self._collect(cal, query, since)
        keyed = [(self._sort_key(body, start, query), body, tomb) for body, start, tomb in items]
        keyed.sort(key=lambda item: item[0])
        if len(self._selection_cache) >= 16:
            self._selection_cache.pop(next(iter(self._selection_cache)))
        self._selection_cache[key] = keyed
        return keyed

    def _sort_key(self, body: Json, start: datetime, query: ListQuery) -> tuple[str, ...]:
        if query.order_by == "startTime":
            return (start.astimezone(UTC).isoformat(), str(body["id"]))
        if query.order_by == "updated":
            return (str(body.get("updated") or ""), str(body["id"]))
        return (str(body["id"]),)

    def _instances(
        self, cal: Calendar, master_id: str, query: ListQuery
    ) -> list[tuple[Json, datetime, bool]]:
        master = cal.events.get(master_id)
        if master is None:
            raise not_found()
        if master.rules is None:
            # Google answers a non-recurring event's instances with the event itself.
            return [(master.body, master.start, master.cancelled)]
        if master.cancelled:
            raise GoogleApiError(410, "deleted", "Resource has been deleted")
        exceptions = self._exceptions(cal).get(master_id, {})
        out: list[tuple[Json, datetime, bool]] = []
        for inst, start in self._expand(
            master, query.time_min, self._window_end(query), exceptions
        ):
            out.append((inst, start, False))
        for record in exceptions.values():
            if record.cancelled and not query.show_deleted:
                continue
            if record.cancelled or self._overlaps(record, query):
                out.append((record.body, record.start, record.cancelled))
        if query.original_start is not None:
            wanted = query.original_start
            out = [item for item in out if self._original_start(cal, item[0]) == wanted]
        out.sort(key=lambda item: (item[1], str(item[0]["id"])))
        return out

    def _original_start(self, cal: Calendar, body: Json) -> datetime | None:
        value = body.get("originalStartTime")
        if not isinstance(value, dict):
            return None
        instant, _, _, _ = self._parse_when(cal, {"start": value}, "start")
        return instant

    # ---------------------------------------------------------------- free/busy

    def busy(
        self, cal: Calendar, time_min: datetime, time_max: datetime
    ) -> list[tuple[datetime, datetime]]:
        """Merged busy periods of a calendar, clipped to the window.

        Busy = not cancelled, opaque, not a working-location entry, and not declined by the
        calendar's owner. Overlapping periods merge; zero-length events stay visible as
        zero-length periods (the recorded freeBusy response shows one)."""
        query = ListQuery(time_min=time_min, time_max=time_max, single_events=True)
        periods: list[tuple[datetime, datetime]] = []
        for body, _start, tomb in self._collect(cal, query, None):
            if tomb or body.get("status") == "cancelled":
                continue
            if (
                body.get("transparency") == "transparent"
                or body.get("eventType") == "workingLocation"
            ):
                continue
            if any(
                a.get("email") == cal.owner and a.get("responseStatus") == "declined"
                for a in body.get("attendees") or []
            ):
                continue
            record = self._make_record(cal, {"start": body["start"], "end": body["end"]}, 0)
            lo, hi = max(record.start, time_min), min(record.end, time_max)
            if hi >= lo:
                periods.append((lo, hi))
        periods.sort()
        merged: list[tuple[datetime, datetime]] = []
        for lo, hi in periods:
            if merged:
                prev_lo, prev_hi = merged[-1]
                overlaps = lo < prev_hi
                # Back-to-back meetings read as one block; a zero-length event stays its own.
                touches = lo == prev_hi and lo < hi and prev_lo < prev_hi
                if overlaps or touches:
                    merged[-1] = (prev_lo, max(prev_hi, hi))
                    continue
            merged.append((lo, hi))
        return merged

    # ---------------------------------------------------------------- bulk loading

    def load_events_payload(self, cal: Calendar, payload: Json | list[Json]) -> LoadReport:
        """Load a recorded events.list page (or a bare list of events) verbatim into a calendar.

        Resources keep their recorded fields (etag, updated, htmlLink...) so they are served back
        unchanged; each still gets a fresh version so it shows in the next incremental sync."""
        items = payload.get("items", []) if isinstance(payload, dict) else payload
        loaded: list[str] = []
        dupes: list[str] = []
        for item in items:
            body = copy.deepcopy(item)
            event_id = str(body.get("id") or self._new_id())
            body["id"] = event_id
            body.setdefault("kind", "calendar#event")
            if event_id in loaded:
                dupes.append(event_id)
            record = self._make_record(cal, body, 0)
            self.version += 1
            record.version = self.version
            cal.events[event_id] = record
            loaded.append(event_id)
        if isinstance(payload, dict):
            cal.summary = str(payload.get("summary") or cal.summary)
            if payload.get("description"):
                cal.description = str(payload["description"])
            if payload.get("timeZone") and zone(str(payload["timeZone"])):
                cal.time_zone = str(payload["timeZone"])
        cal.updated_s = self.clock()
        self.notify(cal.id)
        return LoadReport(loaded=list(dict.fromkeys(loaded)), duplicate_ids=dupes)

    def bulk_insert(self, cal: Calendar, bodies: Iterable[Json]) -> int:
        """Insert many events with one notification (seeding)."""
        count = 0
        for body in bodies:
            self.insert_event(cal, body, notify=False, owned=True)
            count += 1
        self.notify(cal.id)
        return count


def _merge(target: Json, patch: Json) -> Json:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            target[key] = _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target
