"""Push notifications: events.watch channels and their real HTTP deliveries.

A channel is created by `PushDispatcher.watch` and stored in the `CalendarStore`; its first
message (`sync`) is scheduled at once, so, as with Google, it can reach the receiver before the
watch response does. Every later change to the calendar schedules an `exists` message. Messages
are POSTed with an empty body and Google's `X-Goog-*` headers by background tasks on the app's own
`aiohttp.ClientSession` (born and closed in the app's `cleanup_ctx`), so an API call never waits
for a receiver. Deliveries of one channel go out in order; message numbers increase but are not
consecutive (clients must not infer loss from gaps, and must cope with real loss anyway).

Faults (`store.push_faults`): `drop_next` swallows that many upcoming messages (their numbers are
still used up), `duplicate_next` sends that many messages twice.

Choices where Google's behaviour is not documented: a failed delivery is not retried; a channel
past its expiration silently stops; webhook addresses must be https, except http on 127.0.0.1 /
localhost / ::1 when `store.allow_insecure_loopback_webhooks` is set (tests, local demos).
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import logging
import random
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from aiohttp import web

from emulator.calendar_store import Calendar, CalendarStore, Channel
from emulator.errors import GoogleApiError

log = logging.getLogger(__name__)

Json = dict[str, Any]

CHANNEL_ID = re.compile(r"[A-Za-z0-9\-_+/=]{1,64}")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
DELIVERY_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Delivery:
    """One notification as sent (or dropped), for tests and inspection."""

    channel_id: str
    state: str
    message_number: int
    delivered: bool
    status: int | None


class PushDispatcher:
    """Owns channel creation/stop and the background delivery of notifications."""

    def __init__(self, store: CalendarStore) -> None:
        self.store = store
        self.deliveries: list[Delivery] = []
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._locks: dict[str, asyncio.Lock] = {}

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx: the HTTP session and the change listener live as long as the app."""
        self._loop = asyncio.get_running_loop()
        # No keep-alive: each notification is its own connection, so a receiver that shuts down
        # is never held open by an idle pooled connection of ours.
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=DELIVERY_TIMEOUT_S),
            connector=aiohttp.TCPConnector(force_close=True),
        )
        self.store.listeners.append(self._on_change)
        try:
            yield
        finally:
            self.store.listeners.remove(self._on_change)
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._session.close()
            self._session = None
            self._loop = None

    async def drain(self) -> None:
        """Wait until every scheduled delivery has finished (tests use this instead of sleeping)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ---------------------------------------------------------------- API verbs

    def watch(self, owner: str, cal: Calendar, path_calendar_id: str, body: Json) -> Json:
        """events.watch: validate, store the channel, schedule `sync`, return Google's Channel."""
        channel_id = body.get("id")
        if not channel_id:
            raise GoogleApiError(400, "required", "Required parameter: id")
        if not isinstance(channel_id, str) or not CHANNEL_ID.fullmatch(channel_id):
            raise GoogleApiError(400, "invalid", f"Invalid channel id: {channel_id}")
        if channel_id in self.store.channels:
            raise GoogleApiError(400, "channelIdNotUnique", "Channel id not unique")
        if body.get("type") not in ("web_hook", "webhook"):
            raise GoogleApiError(400, "invalid", f"Unsupported channel type: {body.get('type')}")
        address = body.get("address")
        if not address:
            raise GoogleApiError(400, "required", "Required parameter: address")
        self._check_address(str(address))
        token = body.get("token")
        if token is not None and len(str(token)) > 256:
            raise GoogleApiError(400, "invalid", "Channel token is longer than 256 characters")
        now_ms = int(self.store.clock() * 1000)
        max_ms = now_ms + self.store.channel_max_lifetime_s * 1000
        expiration_ms = now_ms + self.store.channel_default_lifetime_s * 1000
        if body.get("expiration") is not None:
            requested = int(body["expiration"])
            if requested <= now_ms:
                raise GoogleApiError(400, "invalid", "Expiration time is in the past.")
            # Google silently shortens lifetimes beyond its maximum.
            expiration_ms = min(requested, max_ms)
        digest = hashlib.sha256(f"{cal.id}|events".encode()).digest()
        resource_id = base64.b32hexencode(digest).decode().lower().rstrip("=")[:27]
        channel = Channel(
            id=channel_id,
            resource_id=resource_id,
            resource_uri=(
                "https://www.googleapis.com/calendar/v3/calendars/"
                f"{quote(path_calendar_id, safe='@')}/events?alt=json"
            ),
            calendar_id=cal.id,
            owner=owner,
            address=str(address),
            token=str(token) if token is not None else None,
            expiration_ms=expiration_ms,
            params={str(k): str(v) for k, v in (body.get("params") or {}).items()},
        )
        self.store.channels[channel_id] = channel
        self._schedule(channel, "sync")
        out: Json = {
            "kind": "api#channel",
            "id": channel.id,
            "resourceId": channel.resource_id,
            "resourceUri": channel.resource_uri,
        }
        if channel.token is not None:
            out["token"] = channel.token
        out["expiration"] = str(channel.expiration_ms)
        return out

    def stop(self, body: Json) -> None:
        """channels.stop: 204 for a live channel, Google's 404 otherwise."""
        channel_id, resource_id = body.get("id"), body.get("resourceId")
        if not channel_id:
            raise GoogleApiError(400, "required", "Required parameter: id")
        if not resource_id:
            raise GoogleApiError(400, "required", "Required parameter: resourceId")
        channel = self.store.channels.get(str(channel_id))
        expired = channel is not None and channel.expiration_ms <= self.store.clock() * 1000
        if channel is None or channel.stopped or expired or channel.resource_id != resource_id:
            raise GoogleApiError(
                404,
                "notFound",
                f"Channel '{channel_id}' not found for project 'emulator'",
            )
        channel.stopped = True
        del self.store.channels[channel.id]

    def _check_address(self, address: str) -> None:
        parts = urlsplit(address)
        if not parts.scheme or not parts.netloc:
            raise GoogleApiError(
                400,
                "push.webhookUrlUnauthorized",
                f"Unauthorized WebHook callback channel: {address}",
            )
        if parts.scheme == "https":
            return
        loopback = parts.scheme == "http" and (parts.hostname or "") in LOOPBACK_HOSTS
        if not (loopback and self.store.allow_insecure_loopback_webhooks):
            raise GoogleApiError(
                400, "push.webhookUrlNotHttps", f"WebHook callback must be HTTPS: {address}"
            )

    # ---------------------------------------------------------------- delivery

    def _on_change(self, calendar_id: str) -> None:
        now_ms = int(self.store.clock() * 1000)
        for channel in list(self.store.channels.values()):
            if channel.calendar_id != calendar_id or channel.stopped:
                continue
            if channel.expiration_ms <= now_ms:
                continue  # an expired channel stops delivering; the client must re-watch
            self._schedule(channel, "exists")

    def _schedule(self, channel: Channel, state: str) -> None:
        # Deterministic but non-consecutive numbers, as Google's are.
        step = 1
        if state != "sync":
            seeded = random.Random(f"{channel.id}:{channel.last_message_number}")  # noqa: S311
            step = seeded.randint(1, 7)
        channel.last_message_number += step
        number = channel.last_message_number
        faults = self.store.push_faults
        copies = 1
        if faults.drop_next > 0:
            faults.drop_next -= 1
            copies = 0
        elif faults.duplicate_next > 0:
            faults.duplicate_next -= 1
            copies = 2
        if copies == 0:
            self.deliveries.append(Delivery(channel.id, state, number, False, None))
            return
        loop = self._loop
        if loop is None:
            log.warning("push: app not running, notification %s for %s lost", number, channel.id)
            return
        for _ in range(copies):
            loop.call_soon_threadsafe(self._spawn, channel, state, number)

    def _spawn(self, channel: Channel, state: str, number: int) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(channel, state, number))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, channel: Channel, state: str, number: int) -> None:
        lock = self._locks.setdefault(channel.id, asyncio.Lock())
        async with lock:
            if channel.stopped or self._session is None:
                return
            headers = {
                "X-Goog-Channel-ID": channel.id,
                "X-Goog-Resource-ID": channel.resource_id,
                "X-Goog-Resource-URI": channel.resource_uri,
                "X-Goog-Resource-State": state,
                "X-Goog-Message-Number": str(number),
                "X-Goog-Channel-Expiration": email.utils.formatdate(
                    channel.expiration_ms / 1000, usegmt=True
                ),
            }
            if channel.token is not None:
                headers["X-Goog-Channel-Token"] = channel.token
            status: int | None = None
            try:
                async with self._session.post(channel.address, data=b"", headers=headers) as resp:
                    status = resp.status
                    await resp.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.info("push to %s failed: %s", channel.address, exc)
            self.deliveries.append(Delivery(channel.id, state, number, status is not None, status))
