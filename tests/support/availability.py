"""Helpers of the availability tests: connected users with events in the emulator, the sync
engine run directly (no scheduler in tests), and JSON calls to the gateway."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.apikeys import ApiKeyStore
from gateway.clock import rfc3339
from gateway.http.appkeys import SYNC_KEY
from tests.support.stack import ALICE, DAVE, Stack

ERIN, FRANK = "erin@example.com", "frank@example.com"
_SUBS = {ERIN: "200000000000000000005", FRANK: "200000000000000000006"}
_ids = itertools.count(1)


def day(offset_days: int = 7) -> datetime:
    """Midnight UTC `offset_days` from today: a date inside the sync horizon, in the future."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today + timedelta(days=offset_days)


def z(moment: datetime) -> str:
    """The wire spelling of an instant (gateway.clock.rfc3339), short for assertions."""
    return rfc3339(moment)


def at(base: datetime, hhmm: str) -> datetime:
    hours, minutes = hhmm.split(":")
    return base + timedelta(hours=int(hours), minutes=int(minutes))


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: Any


async def call(
    stack: Stack,
    method: str,
    path: str,
    *,
    key: str | None = None,
    json: Any = None,
    params: dict[str, str] | None = None,
) -> Response:
    async with stack.http.request(
        method, stack.url(path), json=json, params=params, headers=stack.auth(key)
    ) as response:
        body = await response.json(content_type=None)
        return Response(response.status, dict(response.headers), body)


async def connect(stack: Stack, email: str, user_id: str | None = None) -> str:
    """Connect `email` through the real OAuth flow (creating emulator users ERIN and FRANK on
    first use); returns the integration id."""
    if email in _SUBS and stack.google.user_by_email(email) is None:
        stack.google.add_user(_SUBS[email], email, time_zone="UTC")
    result = await stack.connect(email, user_id=user_id or f"u-{email.split('@')[0]}")
    assert result["status"] == "connected", result
    return result["integration_id"]


async def sync(stack: Stack, integration_id: str) -> list[str]:
    """Bring the integration's calendars up to date (what the scheduler would do); returns
    their `cal_` ids."""
    engine = stack.app[SYNC_KEY]
    calendars = await engine.ensure_calendars(integration_id)
    for calendar in calendars:
        outcome = await engine.sync_calendar(calendar.id)
        assert outcome.status == "synced", outcome
    return [c.id for c in calendars]


def event(stack: Stack, email: str, start: datetime, end: datetime, **extra: Any) -> str:
    """An event "created in Google Calendar" on the user's primary calendar."""
    event_id = f"avail{next(_ids):06d}"
    stack.google.calendars.insert_event(
        stack.google.calendars.ensure_user(email),
        {"id": event_id, "start": {"dateTime": z(start)}, "end": {"dateTime": z(end)}, **extra},
    )
    return event_id


def rate_limit(stack: Stack, email: str, times: int = 1) -> None:
    """The user's next `times` freeBusy calls are refused: 403 rateLimitExceeded."""
    stack.google.inject_fault(
        status=403, reason="rateLimitExceeded", times=times, user=email, endpoint="freebusy.query"
    )


def freebusy_calls(stack: Stack, email: str | None = None) -> int:
    user = stack.google.user_by_email(email) if email else None
    return len(
        stack.google.inspector.requests(
            endpoint="freebusy.query", user=user.sub if user is not None else None
        )
    )


async def key_with(stack: Stack, *scopes: str, tenant: str = "acme") -> str:
    return (await ApiKeyStore(stack.engine).create(tenant, list(scopes), name="narrow")).value


__all__ = ["ALICE", "DAVE", "ERIN", "FRANK"]
