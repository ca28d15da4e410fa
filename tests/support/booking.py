"""Helpers of the booking tests: booking calls and what the emulator holds."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.google.events import GATEWAY_PROPERTY
from tests.support.availability import Response, at, z
from tests.support.stack import Stack


def events_path(integration_id: str) -> str:
    return f"/v1/integrations/{integration_id}/events"


def slot(base: datetime, start: str = "10:00", end: str = "10:30", **extra: Any) -> dict[str, Any]:
    return {"summary": "Intro call", "start": z(at(base, start)), "end": z(at(base, end)), **extra}


async def book(
    stack: Stack,
    integration_id: str,
    body: dict[str, Any],
    *,
    key: str | None,
    api_key: str | None = None,
) -> Response:
    """POST .../events with `key` as Idempotency-Key (None: no header)."""
    headers = stack.auth(api_key)
    if key is not None:
        headers["Idempotency-Key"] = key
    async with stack.http.post(
        stack.url(events_path(integration_id)), json=body, headers=headers
    ) as response:
        return Response(
            response.status, dict(response.headers), await response.json(content_type=None)
        )


def gateway_events(stack: Stack, email: str) -> list[dict[str, Any]]:
    """Every live event on the user's primary calendar at the emulator that the gateway made."""
    calendar = stack.google.calendars.ensure_user(email)
    out = []
    for record in calendar.events.values():
        body = record.body
        private = (body.get("extendedProperties") or {}).get("private") or {}
        if GATEWAY_PROPERTY in private and body.get("status") != "cancelled":
            out.append(body)
    return out


def inserts(stack: Stack) -> list[int]:
    """Statuses of every events.insert the emulator saw (0: applied, answer dropped)."""
    return [r.status for r in stack.google.inspector.requests(endpoint="events.insert")]
