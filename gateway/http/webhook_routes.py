"""`POST /webhooks/google/calendar`: Google's push notifications for watched calendars.

    POST /webhooks/google/calendar      public (no API key: the channel token authenticates)
      headers  X-Goog-Channel-ID, X-Goog-Channel-Token, X-Goog-Resource-ID,
               X-Goog-Resource-State (sync | exists | not_exists), X-Goog-Message-Number,
               X-Goog-Channel-Expiration (informational); the body is empty
      200  acknowledged: a new message requested one sync of its calendar (coalesced with any
           waiting request; the sync runs in the scheduler, never here) or, when this
           process's scheduler has a free slot and the calendar may be claimed, leased the
           calendar to it in the same transaction (its sync starts at once); a repeated or
           older message number is acknowledged and does nothing
      400  problem+json `invalid_notification`: a header is missing or malformed
      404  problem+json `channel_not_found`: unknown, stopped or expired channel, wrong token,
           or a resource id that is not the channel's (one answer for all: a prober learns
           nothing). Nothing is changed and Google is not called.
      413  a body larger than 1 KiB

The handler does one read and at most one short write transaction, so it answers in
milliseconds. The channel token is compared as a SHA-256 in constant time and never logged.
"""

from __future__ import annotations

import logging
import re

from aiohttp import web

from gateway.errors import NotFound, ProblemError
from gateway.http.appkeys import ENGINE_KEY, SCHEDULER_KEY, SYNC_NUDGE_KEY
from gateway.sync.channel_store import ChannelStore
from gateway.sync.channels import (
    RESOURCE_STATES,
    WEBHOOK_PATH,
    Notification,
    NotificationReceiver,
    Verdict,
)

log = logging.getLogger(__name__)

# Google's notifications have an empty body; anything larger is not one.
MAX_BODY_BYTES = 1024
_CHANNEL_ID = re.compile(r"[A-Za-z0-9\-_+/=]{1,64}")
_PRINTABLE = re.compile(r"[\x21-\x7e]{1,255}")
_NUMBER = re.compile(r"[0-9]{1,19}")
MAX_TOKEN_CHARS = 256  # Google's limit on channel tokens


def _invalid(header: str) -> ProblemError:
    return ProblemError(
        f"missing or malformed {header} header", code="invalid_notification", status=400
    )


def parse_notification(request: web.Request) -> Notification:
    """The notification's headers, checked for shape (400 problem otherwise)."""
    h = request.headers
    channel_id = h.get("X-Goog-Channel-ID", "")
    if not _CHANNEL_ID.fullmatch(channel_id):
        raise _invalid("X-Goog-Channel-ID")
    token = h.get("X-Goog-Channel-Token")
    if token is not None and not (0 < len(token) <= MAX_TOKEN_CHARS):
        raise _invalid("X-Goog-Channel-Token")
    resource_id = h.get("X-Goog-Resource-ID", "")
    if not _PRINTABLE.fullmatch(resource_id):
        raise _invalid("X-Goog-Resource-ID")
    state = h.get("X-Goog-Resource-State", "")
    if state not in RESOURCE_STATES:
        raise _invalid("X-Goog-Resource-State")
    number = h.get("X-Goog-Message-Number", "")
    if not _NUMBER.fullmatch(number) or int(number) < 1:
        raise _invalid("X-Goog-Message-Number")
    if len(h.get("X-Goog-Channel-Expiration", "")) > 64:
        raise _invalid("X-Goog-Channel-Expiration")
    return Notification(
        channel_id=channel_id,
        token=token,
        resource_id=resource_id,
        resource_state=state,
        message_number=int(number),
    )


async def google_calendar_notification(request: web.Request) -> web.Response:
    """A push notification from Google (see the module doc for the answers)."""
    if request.body_exists:
        body = await request.content.read(MAX_BODY_BYTES + 1)
        if len(body) > MAX_BODY_BYTES:
            raise ProblemError(
                "a push notification has no body", code="payload_too_large", status=413
            )
    notification = parse_notification(request)
    receiver = NotificationReceiver(ChannelStore(request.app[ENGINE_KEY]))
    # With a free slot, this process's scheduler may have the calendar leased to it by the
    # notification's own transaction and sync it at once (no request, wake-up and claim).
    scheduler = request.app.get(SCHEDULER_KEY)
    # Google's `sync` message never starts a sync at once (it closes a gap, if any: the
    # request waits for the scheduler; see NotificationReceiver.receive).
    wants_slot = notification.resource_state != "sync"
    offer = scheduler.offer() if scheduler is not None and wants_slot else None
    try:
        received = await receiver.receive(notification, offer=offer)
    except BaseException:
        if scheduler is not None and offer is not None:
            scheduler.decline(offer)
        raise
    if scheduler is not None and offer is not None:
        if received.claimed is not None:
            await scheduler.take(offer, received.claimed)
        else:
            scheduler.decline(offer)
    log.debug(
        "push notification: channel=%s state=%s number=%d verdict=%s",
        notification.channel_id,
        notification.resource_state,
        notification.message_number,
        received.verdict.value,
    )
    if received.verdict is Verdict.REFUSED:
        raise NotFound("no such channel", code="channel_not_found")
    if received.requested and received.calendar_id is not None:
        nudge = request.app.get(SYNC_NUDGE_KEY)
        if nudge is not None:
            try:
                nudge(received.calendar_id)
            except Exception:  # the request is in the database; the scheduler's tick finds it
                log.exception("sync nudge failed: calendar=%s", received.calendar_id)
    return web.Response(status=200)


def setup(app: web.Application) -> None:
    """Add the webhook route (always: with push off, every notification is refused)."""
    app.router.add_post(WEBHOOK_PATH, google_calendar_notification)
