"""Calendar v3 on the wire: routes under `/calendar/v3/` and calendar control under
`/_emulator/calendar/`.

Every `/calendar/v3/...` request goes through one pipeline: find the discovery method by verb and
path (unknown -> Google's 404), authenticate with that method's scopes from the discovery document
(401 / 403 `insufficientPermissions`), check parameters and the JSON body against the discovery
document (Google's 400s), then call a thin handler that uses `CalendarStore` verbs and renders
JSON the way Google does (pretty-printed unless `prettyPrint=false`, `fields` partial responses).
Discovery methods the emulator does not implement answer 501 so a gap is never mistaken for
Google's behaviour. `POST /batch/calendar/v3` runs multipart/mixed batches through the same
pipeline.

Implemented: calendarList.list/get, calendars.get, settings.list/get, events.list/get/instances/
insert/update/patch/delete/watch, channels.stop, freebusy.query.

Control routes (no auth, JSON), all under `/_emulator/calendar/`:
  POST   users/{email}/calendars                  {summary, timeZone?, id?} -> {id}
  PATCH  calendars/{calendarId}                   {timeZone}: the owner changes the calendar's
                                                  zone in Google Calendar's settings (events
                                                  keep theirs; no push: no event changed)
  POST   calendars/{calendarId}/events            Event body: insert as if done in Google Calendar
  PATCH  calendars/{calendarId}/events/{eventId}  patch body (instance ids make exceptions)
  DELETE calendars/{calendarId}/events/{eventId}  delete (tombstone)
  POST   calendars/{calendarId}/events/{eventId}/response
                                                  {email, responseStatus}: an attendee answers
  POST   users/{email}/sync-tokens/invalidate     every sync token of the user -> 410
  POST   push/faults                              {drop?: n, duplicate?: n}
  POST   settings                                 {emptyPageEvery, maxPageItems, syncTokenMaxAgeS,
                                                   freebusyMaxRangeDays, channelDefaultLifetimeS,
                                                   allowInsecureLoopbackWebhooks}
  POST   calendars/{calendarId}/seed              {seed, count} -> counts
  POST   calendars/{calendarId}/load              a recorded events.list page -> loaded ids
  GET    channels                                 channels and the delivery log
  POST   reset                                    {data?: bool} faults only, or all calendar data
A `calendarId` there may be a scripted user's email before that user ever called the API.
"""

from __future__ import annotations

import asyncio
import email.policy
import json
import re
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import Message
from email.parser import BytesParser
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict, MultiMapping
from yarl import URL

from emulator.calendar_store import (
    PRIMARY_DEFAULT_REMINDERS,
    Calendar,
    CalendarStore,
    ListQuery,
    invalid,
    not_found,
    time_range_empty,
)
from emulator.discovery import Discovery, load_discovery, loaded_discovery
from emulator.errors import GoogleApiError
from emulator.push import PushDispatcher
from emulator.recurrence import (
    TimeValueError,
    format_datetime,
    format_utc_millis,
    parse_datetime,
    zone,
)
from emulator.routing import add_control_route, json_body
from emulator.seed import seed_calendar
from emulator.state import EmulatorState

Json = dict[str, Any]
API_PREFIX = "/calendar/v3/"
PUSH_KEY = web.AppKey("calendar_push", PushDispatcher)
# Google's documented cap on calls in one batch request.
BATCH_MAX_CALLS = 1000
_BLANK_LINE = re.compile(r"\r?\n\r?\n")
SYNC_FORBIDDEN = (
    "iCalUID",
    "orderBy",
    "privateExtendedProperty",
    "q",
    "sharedExtendedProperty",
    "timeMin",
    "timeMax",
    "updatedMin",
)


@dataclass
class Call:
    """One authenticated, validated API call."""

    headers: Mapping[str, str]
    state: EmulatorState
    store: CalendarStore
    push: PushDispatcher
    email: str
    params: dict[str, Any]
    body: Json | None


@dataclass
class Reply:
    status: int = 200
    body: Json | None = None
    headers: dict[str, str] | None = None


Handler = Callable[[Call], Awaitable[Reply]]


# ------------------------------------------------------------------ handlers


def _calendar(call: Call) -> Calendar:
    return call.store.resolve(call.email, str(call.params["calendarId"]))


def _list_entry(cal: Calendar) -> Json:
    entry: Json = {
        "kind": "calendar#calendarListEntry",
        "etag": f'"{int(cal.updated_s * 1000)}"',
        "id": cal.id,
        "summary": cal.summary,
    }
    if cal.description:
        entry["description"] = cal.description
    entry.update(
        {
            "timeZone": cal.time_zone,
            "colorId": "14" if cal.primary else "7",
            "backgroundColor": "#9fe1e7" if cal.primary else "#42d692",
            "foregroundColor": "#000000",
            "selected": True,
            "accessRole": "owner",
            "defaultReminders": list(PRIMARY_DEFAULT_REMINDERS) if cal.primary else [],
            "conferenceProperties": {"allowedConferenceSolutionTypes": ["hangoutsMeet"]},
        }
    )
    if cal.primary:
        entry["primary"] = True
    return entry


async def calendar_list_list(call: Call) -> Reply:
    cals = call.store.calendars_of(call.email)
    return Reply(
        body={
            "kind": "calendar#calendarList",
            "etag": f'"p{int(max(c.updated_s for c in cals) * 1000)}"',
            # Few calendars per user: one page, always with a (full-resync) token.
            "nextSyncToken": "calendarList-" + str(call.store.version),
            "items": [_list_entry(c) for c in cals],
        }
    )


async def calendar_list_get(call: Call) -> Reply:
    return Reply(body=_list_entry(_calendar(call)))


async def calendars_get(call: Call) -> Reply:
    cal = _calendar(call)
    body: Json = {
        "kind": "calendar#calendar",
        "etag": f'"{int(cal.updated_s * 1000)}"',
        "id": cal.id,
        "summary": cal.summary,
        "timeZone": cal.time_zone,
        "conferenceProperties": {"allowedConferenceSolutionTypes": ["hangoutsMeet"]},
    }
    return Reply(body=body)


def _list_query(params: dict[str, Any]) -> ListQuery:
    if params.get("syncToken"):
        for name in SYNC_FORBIDDEN:
            if name in params:
                raise invalid(f"The parameter {name} cannot be used with syncToken.", location=name)
        if params.get("showDeleted") is False:
            raise invalid(
                "showDeleted=false cannot be used with syncToken: deleted events are always "
                "included in an incremental sync.",
                location="showDeleted",
            )
    tz_name = params.get("timeZone")
    if tz_name is not None and zone(str(tz_name)) is None:
        raise invalid(f"Invalid time zone: {tz_name}", location="timeZone")
    return ListQuery(
        max_results=int(params.get("maxResults", 250)),
        page_token=params.get("pageToken"),
        sync_token=params.get("syncToken"),
        time_min=params.get("timeMin"),
        time_max=params.get("timeMax"),
        updated_min=params.get("updatedMin"),
        single_events=bool(params.get("singleEvents", False)),
        show_deleted=bool(params.get("showDeleted", False)),
        order_by=params.get("orderBy"),
        time_zone=tz_name,
        q=params.get("q"),
        ical_uid=params.get("iCalUID"),
        private_properties=list(params.get("privateExtendedProperty", [])),
        shared_properties=list(params.get("sharedExtendedProperty", [])),
        event_types=list(params.get("eventTypes", [])),
    )


def _limit_attendees(event: Json, max_attendees: Any) -> Json:
    """`maxAttendees`: over the limit, Google returns only the participant (the `self` one) and
    sets `attendeesOmitted`."""
    if max_attendees is None or len(event.get("attendees") or []) <= int(max_attendees):
        return event
    out = dict(event)
    out["attendees"] = [a for a in event["attendees"] if a.get("self")]
    out["attendeesOmitted"] = True
    return out


async def events_list(call: Call) -> Reply:
    cal = _calendar(call)
    page = call.store.list_events(cal, _list_query(call.params))
    limit = call.params.get("maxAttendees")
    if limit is not None:
        page["items"] = [_limit_attendees(i, limit) for i in page["items"]]
    return Reply(body=page)


async def events_instances(call: Call) -> Reply:
    cal = _calendar(call)
    query = _list_query(call.params)
    query.single_events = True
    query.order_by = "startTime"
    original = call.params.get("originalStart")
    if original is not None:
        try:
            query.original_start = parse_datetime(str(original))
        except TimeValueError as exc:
            raise invalid(f"Invalid value for: {exc.message}", location="originalStart") from exc
    return Reply(body=call.store.list_events(cal, query, master_id=str(call.params["eventId"])))


def _event_reply(call: Call, cal: Calendar, body: Json) -> Reply:
    tz = zone(str(call.params.get("timeZone") or "")) or cal.tz
    rendered = _limit_attendees(call.store.render(cal, body, tz), call.params.get("maxAttendees"))
    return Reply(body=rendered, headers={"ETag": str(rendered.get("etag", ""))})


async def events_get(call: Call) -> Reply:
    cal = _calendar(call)
    body = call.store.get_event(cal, str(call.params["eventId"]))
    if call.headers.get("If-None-Match") == body.get("etag"):
        return Reply(status=304)
    return _event_reply(call, cal, body)


async def events_insert(call: Call) -> Reply:
    cal = _calendar(call)
    record = call.store.insert_event(cal, call.body or {})
    return _event_reply(call, cal, record.body)


async def events_update(call: Call) -> Reply:
    cal = _calendar(call)
    record = call.store.update_event(
        cal,
        str(call.params["eventId"]),
        call.body or {},
        if_match=call.headers.get("If-Match"),
    )
    return _event_reply(call, cal, record.body)


async def events_patch(call: Call) -> Reply:
    cal = _calendar(call)
    record = call.store.patch_event(
        cal,
        str(call.params["eventId"]),
        call.body or {},
        if_match=call.headers.get("If-Match"),
    )
    return _event_reply(call, cal, record.body)


async def events_delete(call: Call) -> Reply:
    cal = _calendar(call)
    call.store.delete_event(cal, str(call.params["eventId"]), if_match=call.headers.get("If-Match"))
    return Reply(status=204)


async def events_watch(call: Call) -> Reply:
    cal = _calendar(call)
    channel = call.push.watch(call.email, cal, str(call.params["calendarId"]), call.body or {})
    return Reply(body=channel)


async def channels_stop(call: Call) -> Reply:
    call.push.stop(call.body or {})
    return Reply(status=204)


def _body_time(body: Json, name: str) -> datetime:
    raw = body.get(name)
    if not raw:
        raise GoogleApiError(400, "required", f"Missing {name} parameter.")
    try:
        return parse_datetime(str(raw))
    except TimeValueError as exc:
        raise GoogleApiError(400, "invalid", f"Invalid value for: {exc.message}") from exc


async def freebusy_query(call: Call) -> Reply:
    body = call.body or {}
    store = call.store
    time_min, time_max = _body_time(body, "timeMin"), _body_time(body, "timeMax")
    if time_max <= time_min:
        raise time_range_empty(location=None)
    if time_max - time_min > timedelta(days=store.freebusy_max_range_days):
        raise GoogleApiError(
            400, "timeRangeTooLong", "The requested time range is too long.", domain="calendar"
        )
    for name, cap in (("calendarExpansionMax", 50), ("groupExpansionMax", 100)):
        value = body.get(name)
        if value is not None and not 1 <= int(value) <= cap:
            raise GoogleApiError(
                400,
                "invalid",
                f"Invalid value for {name}: {value}. Values must be within the range: [1, {cap}]",
            )
    tz = zone(str(body.get("timeZone") or "UTC"))
    if tz is None:
        raise invalid(f"Invalid time zone: {body.get('timeZone')}")
    cap = int(body.get("calendarExpansionMax") or 50)
    calendars: Json = {}
    for index, item in enumerate(body.get("items") or []):
        cal_id = str((item or {}).get("id") or "")
        if index >= cap:
            calendars[cal_id] = {
                "busy": [],
                "errors": [{"domain": "global", "reason": "tooManyCalendarsRequested"}],
            }
            continue
        cal = _freebusy_calendar(call, cal_id)
        if cal is None:
            calendars[cal_id] = {"errors": [{"domain": "global", "reason": "notFound"}], "busy": []}
            continue
        busy = store.busy(cal, time_min, time_max)
        calendars[cal_id] = {
            "busy": [
                {"start": format_datetime(lo, tz), "end": format_datetime(hi, tz)}
                for lo, hi in busy
            ]
        }
    return Reply(
        body={
            "kind": "calendar#freeBusy",
            "timeMin": format_utc_millis(time_min.timestamp()),
            "timeMax": format_utc_millis(time_max.timestamp()),
            "calendars": calendars,
        }
    )


def _freebusy_calendar(call: Call, cal_id: str) -> Calendar | None:
    """Calendars whose free/busy the caller may see: its own, and (as inside one Workspace
    domain) the primary calendar of any other emulated user."""
    store = call.store
    if cal_id == "primary":
        cal_id = call.email
    cal = store.calendars.get(cal_id)
    if cal is not None and (cal.owner == call.email or cal.primary):
        return cal
    user = call.state.user_by_email(cal_id)
    if user is not None:
        return store.ensure_user(user.email, user.time_zone)
    return None


def _settings(call: Call) -> dict[str, str]:
    primary = call.store.ensure_user(call.email)
    return {
        "timezone": primary.time_zone,
        "locale": "en",
        "weekStart": "1",
        "format24HourTime": "true",
        "dateFieldOrder": "DMY",
        "defaultEventLength": "60",
        "autoAddHangouts": "false",
        "hideWeekends": "false",
        "showDeclinedEvents": "true",
    }


def _setting(key: str, value: str) -> Json:
    return {
        "kind": "calendar#setting",
        "etag": f'"{zlib.crc32(value.encode())}"',
        "id": key,
        "value": value,
    }


async def settings_list(call: Call) -> Reply:
    items = [_setting(k, v) for k, v in sorted(_settings(call).items())]
    return Reply(
        body={
            "kind": "calendar#settings",
            "etag": '"settings"',
            "nextSyncToken": "settings",
            "items": items,
        }
    )


async def settings_get(call: Call) -> Reply:
    key = str(call.params["setting"])
    values = _settings(call)
    if key not in values:
        raise not_found()
    return Reply(body=_setting(key, values[key]))


HANDLERS: dict[str, Handler] = {
    "settings.list": settings_list,
    "settings.get": settings_get,
    "calendarList.list": calendar_list_list,
    "calendarList.get": calendar_list_get,
    "calendars.get": calendars_get,
    "events.list": events_list,
    "events.instances": events_instances,
    "events.get": events_get,
    "events.insert": events_insert,
    "events.update": events_update,
    "events.patch": events_patch,
    "events.delete": events_delete,
    "events.watch": events_watch,
    "channels.stop": channels_stop,
    "freebusy.query": freebusy_query,
}


# ------------------------------------------------------------------ pipeline


def select_fields(value: Any, spec: str) -> Any:
    """Google's `fields` partial response: `a,b/c,items(id,status)`."""
    tree = _parse_fields(spec)
    return _apply_fields(value, tree)


def _parse_fields(spec: str) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    stack = [tree]
    token = ""
    path_nodes: list[dict[str, Any]] = []

    def flush() -> None:
        nonlocal token
        if token.strip():
            node = stack[-1]
            for part in token.strip().split("/"):
                node = node.setdefault(part, {})
            path_nodes.append(node)
        token = ""

    for ch in spec:
        if ch == ",":
            flush()
            path_nodes.clear()
        elif ch == "(":
            flush()
            stack.append(path_nodes[-1] if path_nodes else stack[-1])
            path_nodes.clear()
        elif ch == ")":
            flush()
            path_nodes.clear()
            if len(stack) > 1:
                stack.pop()
        else:
            token += ch
    flush()
    return tree


def _apply_fields(value: Any, tree: dict[str, Any]) -> Any:
    if not tree or "*" in tree:
        return value
    if isinstance(value, list):
        return [_apply_fields(v, tree) for v in value]
    if isinstance(value, dict):
        # A leaf (empty subtree) is taken whole without a call: a 2,500-event page has tens of
        # thousands of them.
        return {
            k: _apply_fields(value[k], sub) if sub else value[k]
            for k, sub in tree.items()
            if k in value
        }
    return value


def _render(reply: Reply, params: dict[str, Any]) -> web.Response:
    if reply.body is None:
        return web.Response(status=reply.status, headers=reply.headers or {})
    body: Any = reply.body
    if params.get("fields"):
        body = select_fields(body, str(params["fields"]))
    pretty = params.get("prettyPrint", True)
    # orjson: the standard library's encoder falls back to pure Python when indenting, and a
    # 2,500-event page then cost the emulator more than the gateway spends on it.
    data = orjson.dumps(body, option=orjson.OPT_INDENT_2 if pretty else 0)
    return web.Response(
        status=reply.status,
        body=data + b"\n" if pretty else data,
        content_type="application/json",
        charset="UTF-8",
        headers=reply.headers or {},
    )


class Pipeline:
    """Authenticate, validate and dispatch one Calendar v3 call; shared by plain requests and
    the parts of a batch request."""

    def __init__(self, state: EmulatorState, push: PushDispatcher) -> None:
        self.state = state
        self.push = push

    async def handle(self, request: web.Request) -> web.StreamResponse:
        return await self.run(
            request.method,
            request.rel_url.raw_path[len(API_PREFIX) :],
            request.query,
            request.headers,
            await request.read() if request.can_read_body else b"",
        )

    async def run(
        self,
        method: str,
        rel_path: str,
        query: MultiMapping[str],
        headers: Mapping[str, str],
        raw_body: bytes,
    ) -> web.Response:
        """One call; raises GoogleApiError for Google's error answers."""
        discovery = await _discovery()
        found = discovery.match(method, rel_path)
        if found is None:
            raise GoogleApiError(404, "notFound", "Not Found")
        spec, path_params = found
        authorization = headers.get("Authorization")
        if authorization is None:
            token = query.get("access_token") or query.get("oauth_token")
            authorization = f"Bearer {token}" if token else None
        caller = self.state.authenticate(authorization, scopes_any=spec.scopes)
        params = discovery.check_parameters(spec, query, path_params)
        body: Json | None = None
        if spec.request_schema is not None:
            try:
                data = json.loads(raw_body) if raw_body.strip() else {}
            except ValueError:
                raise GoogleApiError(400, "parseError", "Parse Error") from None
            body = discovery.check_body(spec.request_schema, data)
        handler = HANDLERS.get(spec.name)
        if handler is None:
            raise GoogleApiError(
                501, "notImplemented", f"{spec.id} is not implemented by the emulator"
            )
        store = self.state.calendars
        store.ensure_user(caller.user.email, caller.user.time_zone)
        call = Call(headers, self.state, store, self.push, caller.user.email, params, body)
        return _render(await handler(call), params)

    async def batch(self, request: web.Request) -> web.StreamResponse:
        """`POST /batch/calendar/v3`: multipart/mixed of application/http parts, answered in
        order with `Content-ID: <response-ID>` parts. Inner calls without an Authorization
        header use the outer one."""
        if not request.content_type.startswith("multipart/"):
            raise GoogleApiError(400, "badContent", "Unsupported content type for batch request")
        # The stdlib parser, unlike aiohttp's, takes the bare-LF line endings that
        # google-api-python-client (and Google's servers) accept.
        raw = await request.read()
        envelope = f"Content-Type: {request.headers['Content-Type']}\r\n\r\n".encode() + raw
        message = BytesParser(policy=email.policy.compat32).parsebytes(envelope)
        parts: list[tuple[str | None, bytes]] = []
        for part in message.get_payload() if message.is_multipart() else []:
            if not isinstance(part, Message):
                continue
            payload = part.get_payload()
            data = payload.encode() if isinstance(payload, str) else b""
            parts.append((part.get("Content-ID"), data))
        if len(parts) > BATCH_MAX_CALLS:
            raise GoogleApiError(
                400, "batchSizeTooLarge", f"A batch may hold at most {BATCH_MAX_CALLS} calls."
            )
        boundary = "batch_" + self.state.new_token("", 12)
        chunks: list[str] = []
        for content_id, payload in parts:
            response = await self._inner(payload, request.headers.get("Authorization"))
            head = [f"--{boundary}", "Content-Type: application/http"]
            if content_id:
                inner_id = content_id.strip().removeprefix("<").removesuffix(">")
                head.append(f"Content-ID: <response-{inner_id}>")
            status_line = f"HTTP/1.1 {response.status} {response.reason}"
            inner_headers = [f"{k}: {v}" for k, v in response.headers.items()]
            text = response.text or ""
            chunks.append(
                "\r\n".join(head)
                + "\r\n\r\n"
                + "\r\n".join([status_line, *inner_headers])
                + "\r\n\r\n"
                + text
                + "\r\n"
            )
        chunks.append(f"--{boundary}--\r\n")
        return web.Response(
            body="".join(chunks).encode(),
            headers={"Content-Type": f"multipart/mixed; boundary={boundary}"},
        )

    async def _inner(self, payload: bytes, outer_auth: str | None) -> web.Response:
        text = payload.decode("utf-8", errors="replace")
        pieces = _BLANK_LINE.split(text, maxsplit=1)
        head, body = pieces[0], (pieces[1] if len(pieces) > 1 else "")
        lines = head.splitlines()
        try:
            method, target, _version = lines[0].split(" ", 2)
        except (IndexError, ValueError):
            return GoogleApiError(400, "badRequest", "Malformed batch part").to_response()
        headers: CIMultiDict[str] = CIMultiDict()
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers.add(name.strip(), value.strip())
        if "Authorization" not in headers and outer_auth:
            headers["Authorization"] = outer_auth
        url = URL(target)
        path = url.raw_path
        if not path.startswith(API_PREFIX):
            return GoogleApiError(404, "notFound", "Not Found").to_response()
        try:
            return await self.run(
                method.upper(), path[len(API_PREFIX) :], url.query, headers, body.encode()
            )
        except GoogleApiError as exc:
            return exc.to_response()


async def _discovery() -> Discovery:
    # Loaded at startup off the loop; the fallback only runs for apps started without it.
    found = loaded_discovery()
    return found if found is not None else await asyncio.to_thread(load_discovery)


# ------------------------------------------------------------------ control routes


def _control(
    state: EmulatorState, push: PushDispatcher
) -> dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    store = state.calendars

    def calendar_for(calendar_id: str) -> Calendar:
        cal = store.calendars.get(calendar_id)
        if cal is None:
            user = state.user_by_email(calendar_id)
            if user is None:
                raise web.HTTPNotFound(
                    text=json.dumps({"error": f"no calendar {calendar_id}"}),
                    content_type="application/json",
                )
            cal = store.ensure_user(user.email, user.time_zone)
        return cal

    def ok(data: Any, status: int = 200) -> web.Response:
        return web.json_response(data, status=status)

    async def api_errors(fn: Callable[[], Any]) -> web.Response:
        try:
            return ok(fn())
        except GoogleApiError as exc:
            return exc.to_response()

    async def add_calendar(request: web.Request) -> web.StreamResponse:
        body = await json_body(request)
        email = request.match_info["email"]
        user = state.user_by_email(email)
        store.ensure_user(email, user.time_zone if user else "UTC")
        return await api_errors(
            lambda: {
                "id": store.add_calendar(
                    email,
                    str(body.get("summary") or "Calendar"),
                    str(body.get("timeZone") or (user.time_zone if user else "UTC")),
                    body.get("id"),
                ).id
            }
        )

    async def set_time_zone(request: web.Request) -> web.StreamResponse:
        cal = calendar_for(request.match_info["calendarId"])
        name = (await json_body(request)).get("timeZone")
        if not isinstance(name, str) or zone(name) is None:
            raise web.HTTPBadRequest(
                text=json.dumps({"error": f"unknown time zone {name!r}"}),
                content_type="application/json",
            )
        cal.time_zone = name
        cal.updated_s = store.clock()
        return ok({"id": cal.id, "timeZone": cal.time_zone})

    async def google_insert(request: web.Request) -> web.StreamResponse:
        cal = calendar_for(request.match_info["calendarId"])
        body = load_discovery().check_body("Event", await json_body(request))
        return await api_errors(
            lambda: store.render(cal, store.insert_event(cal, body).body, cal.tz)
        )

    async def google_patch(request: web.Request) -> web.StreamResponse:
        cal = calendar_for(request.match_info["calendarId"])
        body = load_discovery().check_body("Event", await json_body(request))
        event_id = request.match_info["eventId"]
        return await api_errors(
            lambda: store.render(cal, store.patch_event(cal, event_id, body).body, cal.tz)
        )

    async def google_delete(request: web.Request) -> web.StreamResponse:
        cal = calendar_for(request.match_info["calendarId"])
        event_id = request.match_info["eventId"]

        def run() -> Json:
            store.delete_event(cal, event_id)
            return {"deleted": event_id}

        return await api_errors(run)

    async def guest_response(request: web.Request) -> web.StreamResponse:
        cal = calendar_for(request.match_info["calendarId"])
        body = await json_body(request)
        event_id = request.match_info["eventId"]
        return await api_errors(
            lambda: store.render(
                cal,
                store.respond(
                    cal, event_id, str(body.get("email") or ""), str(body.get("responseStatus"))
                ).body,
                cal.tz,
            )
        )

    async def invalidate(request: web.Request) -> web.StreamResponse:
        return ok({"calendars": store.invalidate_sync_tokens(request.match_info["email"])})

    async def push_faults(request: web.Request) -> web.StreamResponse:
        body = await json_body(request)
        store.push_faults.drop_next = int(body.get("drop", store.push_faults.drop_next))
        store.push_faults.duplicate_next = int(
            body.get("duplicate", store.push_faults.duplicate_next)
        )
        return ok(
            {"drop": store.push_faults.drop_next, "duplicate": store.push_faults.duplicate_next}
        )

    async def settings(request: web.Request) -> web.StreamResponse:
        body = await json_body(request)
        names = {
            "emptyPageEvery": "empty_page_every",
            "maxPageItems": "max_page_items",
            "syncTokenMaxAgeS": "sync_token_max_age_s",
            "freebusyMaxRangeDays": "freebusy_max_range_days",
            "allowInsecureLoopbackWebhooks": "allow_insecure_loopback_webhooks",
            "channelDefaultLifetimeS": "channel_default_lifetime_s",
        }
        for key, value in body.items():
            if key not in names:
                raise web.HTTPBadRequest(
                    text=json.dumps({"error": f"unknown setting {key}"}),
                    content_type="application/json",
                )
            setattr(store, names[key], value)
        return ok({key: getattr(store, attr) for key, attr in names.items()})

    async def seed(request: web.Request) -> web.StreamResponse:
        body = await json_body(request)
        cal = calendar_for(request.match_info["calendarId"])
        report = seed_calendar(
            store, cal, seed=int(body.get("seed", 0)), count=int(body.get("count", 100))
        )
        return ok(report)

    async def load(request: web.Request) -> web.StreamResponse:
        cal = calendar_for(request.match_info["calendarId"])
        payload = await json_body(request)
        result = store.load_events_payload(cal, payload)
        return ok({"loaded": result.loaded, "duplicateIds": result.duplicate_ids})

    async def reset(request: web.Request) -> web.StreamResponse:
        body = await json_body(request)
        if body.get("data", False):
            store.clear()
        else:
            store.reset_faults()
        return ok({"ok": True})

    async def channels(request: web.Request) -> web.StreamResponse:
        return ok(
            {
                "channels": [
                    {
                        "id": c.id,
                        "resourceId": c.resource_id,
                        "calendarId": c.calendar_id,
                        "address": c.address,
                        "expiration": str(c.expiration_ms),
                        "lastMessageNumber": c.last_message_number,
                    }
                    for c in store.channels.values()
                ],
                "deliveries": [d.__dict__ for d in push.deliveries],
            }
        )

    return {
        "POST /calendar/users/{email}/calendars": add_calendar,
        "POST /calendar/calendars/{calendarId}/events": google_insert,
        "PATCH /calendar/calendars/{calendarId}/events/{eventId}": google_patch,
        "PATCH /calendar/calendars/{calendarId}": set_time_zone,
        "DELETE /calendar/calendars/{calendarId}/events/{eventId}": google_delete,
        "POST /calendar/calendars/{calendarId}/events/{eventId}/response": guest_response,
        "POST /calendar/users/{email}/sync-tokens/invalidate": invalidate,
        "POST /calendar/push/faults": push_faults,
        "POST /calendar/settings": settings,
        "POST /calendar/calendars/{calendarId}/seed": seed,
        "POST /calendar/calendars/{calendarId}/load": load,
        "GET /calendar/channels": channels,
        "POST /calendar/reset": reset,
    }


def setup(app: web.Application, state: EmulatorState) -> None:
    """Register Calendar v3 and its control routes; wire the store to the state's clock and
    users, and the push dispatcher to the app's lifetime."""
    store = state.calendars
    store.clock = state.clock

    def user_time_zone(email: str) -> str | None:
        user = state.user_by_email(email)
        return user.time_zone if user is not None else None

    store.user_time_zone = user_time_zone
    push = PushDispatcher(store)
    app[PUSH_KEY] = push

    async def preload(app: web.Application) -> AsyncIterator[None]:
        await asyncio.to_thread(load_discovery)
        yield

    app.cleanup_ctx.append(preload)
    app.cleanup_ctx.append(push.lifecycle)
    pipeline = Pipeline(state, push)
    app.router.add_route("*", API_PREFIX + "{tail:.*}", pipeline.handle)
    app.router.add_post("/batch/calendar/v3", pipeline.batch)
    for key, handler in _control(state, push).items():
        method, path = key.split(" ", 1)
        add_control_route(app, method, path, handler)


def utc_now(store: CalendarStore) -> datetime:
    """The store's now as an aware UTC datetime (handy for tests building windows)."""
    return datetime.fromtimestamp(store.clock(), UTC)
