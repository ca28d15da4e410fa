"""An async Google Calendar v3 client, shaped by Google's own discovery document.

Requests are BUILT by google-api-python-client from the Calendar v3 discovery document that ships
with it (`static_discovery=True`): method, path template, parameter names, types and enum values
are checked by the official library, so we cannot send a request Google would not recognise.
They are SENT with aiohttp, so no blocking HTTP ever runs on the event loop.

Every request carries `quotaUser` (a stable, non-personal id: the integration id) so Google's
per-user quota is attributed to the right user, and a bearer token from a `TokenSource`; a 401
gets exactly one retry with a refreshed token.

Google's error envelope maps onto the error tree in `gateway.google.errors`. Response bodies are
decoded with orjson: an events.list page of 2,500 events is about 1.7 MB of JSON, and the sync
engine reads many of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import httplib2
import orjson
from googleapiclient.discovery import Resource, build
from googleapiclient.http import HttpRequest

from gateway.google.errors import (
    CalendarBadRequest,
    DuplicateEvent,
    EventGone,
    GoogleError,
    GoogleNotFound,
    InsufficientScope,
    PreconditionFailed,
    RateLimited,
    RevokedOrInvalidToken,
    SyncTokenExpired,
    TransientGoogleError,
    UnexpectedGoogleResponse,
)
from gateway.observability.metrics import GOOGLE_ERRORS, GOOGLE_REQUESTS

Json = dict[str, Any]

# Reasons Google uses for quota and rate limits (403 or 429, domain usageLimits).
_RATE_LIMIT_REASONS = frozenset(
    {"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded", "dailyLimitExceeded"}
)


class TokenSource(Protocol):
    """Where the client gets the bearer token of one integration."""

    async def access_token(self) -> str:
        """A token believed valid."""
        ...

    async def refreshed_token(self, stale: str) -> str:
        """A token after Google refused `stale` with 401 (refresh unless already replaced)."""
        ...


# Answers larger than this are decoded in a worker thread (about 100 events of a page).
THREAD_DECODE_BYTES = 64 * 1024


@dataclass(frozen=True)
class _Resources:
    events: Resource
    freebusy: Resource
    channels: Resource
    calendar_list: Resource


def _build_resources(base_url: str) -> _Resources:
    # The Http object is never used to send anything: requests are only built here.
    service = build(
        "calendar",
        "v3",
        http=httplib2.Http(),
        static_discovery=True,
        cache_discovery=False,
        client_options={"api_endpoint": base_url},
    )
    # Resource objects are built from the discovery document on every call (about 2 ms);
    # building each once keeps request construction around 35 microseconds.
    return _Resources(
        events=service.events(),
        freebusy=service.freebusy(),
        channels=service.channels(),
        calendar_list=service.calendarList(),
    )


class CalendarClient:
    """Calendar v3 calls for the gateway. Create with `await CalendarClient.create(...)`."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        resources: _Resources,
        *,
        timeout_s: float = 20.0,
        before_send: Callable[[], None] | None = None,
    ) -> None:
        self._session = session
        self._r = resources
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._before_send = before_send

    @classmethod
    async def create(
        cls,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        timeout_s: float = 20.0,
        before_send: Callable[[], None] | None = None,
    ) -> CalendarClient:
        """`base_url` is GOOGLE_CALENDAR_API_URL, e.g. https://www.googleapis.com/calendar/v3/.

        `before_send` runs before each call goes out and may refuse it by raising (the live-call
        limits of gateway.livecalls); the refusal reaches the caller as is."""
        resources = await asyncio.to_thread(_build_resources, base_url.rstrip("/") + "/")
        return cls(session, resources, timeout_s=timeout_s, before_send=before_send)

    # -- calls -------------------------------------------------------------------------------

    async def list_events(
        self,
        tokens: TokenSource,
        quota_user: str,
        calendar_id: str,
        **params: Any,
    ) -> Json:
        """One page of events.list; `params` are Calendar v3 names (syncToken, pageToken,
        timeMin, timeMax, singleEvents, showDeleted, maxResults, ...)."""
        # prettyPrint=false: Google indents by default, and a 2,500-event page is then a
        # third whitespace for both sides to write, send and read.
        request = self._r.events.list(
            calendarId=calendar_id, quotaUser=quota_user, prettyPrint=False, **params
        )
        return await self._send(tokens, request)

    async def event_pages(
        self, tokens: TokenSource, quota_user: str, calendar_id: str, **params: Any
    ) -> AsyncIterator[Json]:
        """Every page of an events.list, following nextPageToken (pages may be empty)."""
        page_token: str | None = None
        while True:
            extra = {"pageToken": page_token} if page_token else {}
            page = await self.list_events(tokens, quota_user, calendar_id, **params, **extra)
            yield page
            page_token = page.get("nextPageToken")
            if not page_token:
                return

    async def get_event(
        self, tokens: TokenSource, quota_user: str, calendar_id: str, event_id: str
    ) -> Json:
        return await self._send(
            tokens,
            self._r.events.get(calendarId=calendar_id, eventId=event_id, quotaUser=quota_user),
        )

    async def insert_event(
        self,
        tokens: TokenSource,
        quota_user: str,
        calendar_id: str,
        body: Json,
        *,
        send_updates: str = "none",
    ) -> Json:
        """Insert; a client-chosen `body["id"]` that exists already raises DuplicateEvent."""
        return await self._send(
            tokens,
            self._r.events.insert(
                calendarId=calendar_id, body=body, sendUpdates=send_updates, quotaUser=quota_user
            ),
        )

    async def patch_event(
        self,
        tokens: TokenSource,
        quota_user: str,
        calendar_id: str,
        event_id: str,
        body: Json,
        *,
        if_match: str | None = None,
        send_updates: str = "none",
    ) -> Json:
        """Patch; with `if_match` (an etag) a concurrent change raises PreconditionFailed."""
        request = self._r.events.patch(
            calendarId=calendar_id,
            eventId=event_id,
            body=body,
            sendUpdates=send_updates,
            quotaUser=quota_user,
        )
        return await self._send(tokens, request, {"If-Match": if_match} if if_match else None)

    async def delete_event(
        self,
        tokens: TokenSource,
        quota_user: str,
        calendar_id: str,
        event_id: str,
        *,
        send_updates: str = "none",
    ) -> None:
        """Delete; an already deleted event raises EventGone, an unknown one GoogleNotFound."""
        await self._send(
            tokens,
            self._r.events.delete(
                calendarId=calendar_id,
                eventId=event_id,
                sendUpdates=send_updates,
                quotaUser=quota_user,
            ),
        )

    async def freebusy(
        self,
        tokens: TokenSource,
        quota_user: str,
        *,
        time_min: str,
        time_max: str,
        calendar_ids: list[str],
        time_zone: str = "UTC",
    ) -> Json:
        body = {
            "timeMin": time_min,
            "timeMax": time_max,
            "timeZone": time_zone,
            "items": [{"id": c} for c in calendar_ids],
        }
        return await self._send(tokens, self._r.freebusy.query(body=body, quotaUser=quota_user))

    async def watch_events(
        self,
        tokens: TokenSource,
        quota_user: str,
        calendar_id: str,
        *,
        channel_id: str,
        address: str,
        token: str,
        expiration_ms: int | None = None,
    ) -> Json:
        """Open a push channel for the calendar's events (the channel `token` is a secret that
        Google echoes on every notification)."""
        body: Json = {"id": channel_id, "type": "web_hook", "address": address, "token": token}
        if expiration_ms is not None:
            body["expiration"] = str(expiration_ms)
        return await self._send(
            tokens,
            self._r.events.watch(calendarId=calendar_id, body=body, quotaUser=quota_user),
        )

    async def stop_channel(
        self, tokens: TokenSource, quota_user: str, *, channel_id: str, resource_id: str
    ) -> None:
        await self._send(
            tokens,
            self._r.channels.stop(
                body={"id": channel_id, "resourceId": resource_id}, quotaUser=quota_user
            ),
        )

    async def calendar_list(self, tokens: TokenSource, quota_user: str) -> list[Json]:
        """Every calendar list entry (all pages)."""
        entries: list[Json] = []
        page_token: str | None = None
        while True:
            extra = {"pageToken": page_token} if page_token else {}
            page = await self._send(
                tokens, self._r.calendar_list.list(quotaUser=quota_user, **extra)
            )
            entries.extend(page.get("items", []))
            page_token = page.get("nextPageToken")
            if not page_token:
                return entries

    # -- transport ---------------------------------------------------------------------------

    async def _send(
        self,
        tokens: TokenSource,
        request: HttpRequest,
        extra_headers: Mapping[str, str] | None = None,
    ) -> Json:
        if self._before_send is not None:
            self._before_send()
        GOOGLE_REQUESTS.labels(str(getattr(request, "methodId", "unknown"))).inc()
        try:
            token = await tokens.access_token()
            status, body, headers = await self._once(request, token, extra_headers)
            if status == 401:
                # One retry with a fresh token: the cached one may have been revoked or expired
                # early. A second 401 means the grant no longer works.
                token = await tokens.refreshed_token(token)
                status, body, headers = await self._once(request, token, extra_headers)
            if status < 300:
                if len(body) > THREAD_DECODE_BYTES:
                    # A full page decodes for milliseconds: off the event loop, so requests
                    # and transactions waiting for it are not held up meanwhile.
                    return await asyncio.to_thread(_decode, body)
                return _decode(body) if body else {}
            raise _error_from(status, body, headers)
        except GoogleError as exc:
            GOOGLE_ERRORS.labels(exc.google_error or exc.code).inc()
            raise

    async def _once(
        self, request: HttpRequest, token: str, extra_headers: Mapping[str, str] | None
    ) -> tuple[int, bytes, Mapping[str, str]]:
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in ("accept-encoding", "content-length")
        }
        headers["Authorization"] = f"Bearer {token}"
        if extra_headers:
            headers.update(extra_headers)
        data = request.body.encode() if isinstance(request.body, str) else request.body
        try:
            async with self._session.request(
                request.method, request.uri, data=data, headers=headers, timeout=self._timeout
            ) as response:
                return response.status, await response.read(), response.headers
        except TimeoutError:
            raise TransientGoogleError("Google Calendar did not answer in time") from None
        except aiohttp.ClientError as exc:
            raise TransientGoogleError(
                f"cannot reach Google Calendar: {type(exc).__name__}"
            ) from None


def _decode(body: bytes) -> Json:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UnexpectedGoogleResponse("Google Calendar answered malformed JSON") from None
    if not isinstance(value, dict):
        raise UnexpectedGoogleResponse("Google Calendar answered JSON that is not an object")
    return value


def _error_from(status: int, body: bytes, headers: Mapping[str, str]) -> GoogleError:
    """Map Google's error envelope {"error": {"code", "message", "errors": [{"reason", ...}]}}."""
    reason, message, location = "", "", None
    try:
        error = orjson.loads(body).get("error", {})
        first = (error.get("errors") or [{}])[0]
        reason = str(first.get("reason", ""))
        location = first.get("location")
        message = str(error.get("message", ""))[:300]
    except (ValueError, AttributeError, TypeError, IndexError):
        pass
    what = f"Google Calendar {status} {reason or 'error'}" + (f": {message}" if message else "")
    kwargs: dict[str, Any] = {"google_status": status, "google_error": reason or None}
    if status == 401:
        return RevokedOrInvalidToken(what, **kwargs)
    if status == 429 or (status == 403 and reason in _RATE_LIMIT_REASONS):
        retry_after = headers.get("Retry-After")
        return RateLimited(
            what,
            retry_after_s=float(retry_after) if retry_after and retry_after.isdigit() else None,
            **kwargs,
        )
    if status == 403 and reason == "insufficientPermissions":
        return InsufficientScope(what, **kwargs)
    if status == 404:
        return GoogleNotFound(what, **kwargs)
    if status == 409 and reason == "duplicate":
        return DuplicateEvent(what, **kwargs)
    if status == 410 and reason in ("fullSyncRequired", "updatedMinTooLongAgo"):
        return SyncTokenExpired(what, **kwargs)
    if status == 410:
        return EventGone(what, **kwargs)
    if status == 412:
        return PreconditionFailed(what, **kwargs)
    if status >= 500 or status == 408:
        return TransientGoogleError(what, **kwargs)
    if status == 400:
        return CalendarBadRequest(what, location=location, **kwargs)
    return UnexpectedGoogleResponse(what, **kwargs)
