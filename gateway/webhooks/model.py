"""Webhook event types, endpoints and the retry schedule: pure, no I/O.

Retries follow the Standard Webhooks recommendation: exponential backoff with jitter over about
three days. The waits come from the same truncated-exponential, full-jitter formula the Google
retry policy uses (`RetryPolicy.backoff_s`), with a 10 s base, so the first retry comes within
10 s and later ones spread out up to `max_wait_s`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from gateway.clock import rfc3339
from gateway.google.retry import RetryPolicy

INTEGRATION_CONNECTED = "integration.connected"
INTEGRATION_RECONNECTED = "integration.reconnected"
INTEGRATION_NEEDS_REAUTH = "integration.needs_reauth"
INTEGRATION_DISCONNECTED = "integration.disconnected"
BOOKING_UPDATED = "booking.updated"
BOOKING_CANCELLED = "booking.cancelled"
AVAILABILITY_CHANGED = "availability.changed"

EVENT_TYPES = (
    INTEGRATION_CONNECTED,
    INTEGRATION_RECONNECTED,
    INTEGRATION_NEEDS_REAUTH,
    INTEGRATION_DISCONNECTED,
    BOOKING_UPDATED,
    BOOKING_CANCELLED,
    AVAILABILITY_CHANGED,
)


class EndpointState(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"


class DisabledReason(StrEnum):
    GONE = "gone"  # the receiver answered 410
    FAILING = "failing"  # every attempt failed for `disable_after`
    BY_REQUEST = "by_request"  # PATCH {"enabled": false}


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


def new_endpoint_id() -> str:
    return "whe_" + secrets.token_hex(12)


def new_event_id() -> str:
    return "msg_" + secrets.token_hex(16)


def new_delivery_id() -> str:
    return "whd_" + secrets.token_hex(12)


def event_body(event_type: str, data: Mapping[str, object], at: datetime) -> str:
    """The body every delivery of an event sends, byte for byte (it is what is signed)."""
    return json.dumps(
        {"type": event_type, "timestamp": rfc3339(at, timespec="seconds"), "data": dict(data)},
        separators=(",", ":"),
        sort_keys=True,
    )


@dataclass(frozen=True)
class Endpoint:
    """A tenant's webhook endpoint; the sealed secrets never leave the store and service."""

    id: str
    tenant_id: str
    url: str
    description: str | None
    events: frozenset[str]
    state: EndpointState
    disabled_reason: str | None
    failing_since: datetime | None
    previous_until: datetime | None
    created_at: datetime
    updated_at: datetime
    secret: bytes = field(repr=False)
    previous_secret: bytes | None = field(repr=False, default=None)

    def to_public(self) -> dict[str, object]:
        return {
            "id": self.id,
            "url": self.url,
            "description": self.description,
            "events": sorted(self.events),
            "enabled": self.state is EndpointState.ENABLED,
            "disabled_reason": self.disabled_reason,
            "failing_since": rfc3339(self.failing_since, timespec="seconds"),
            "previous_secret_expires_at": (
                rfc3339(self.previous_until, timespec="seconds") if self.previous_until else None
            ),
            "created_at": rfc3339(self.created_at, timespec="seconds"),
            "updated_at": rfc3339(self.updated_at, timespec="seconds"),
        }


@dataclass(frozen=True)
class RetrySchedule:
    """When to try a failed delivery again, when to give up, when to disable the endpoint."""

    base_s: float = 10.0
    max_wait_s: float = 6 * 3600.0
    give_up_after: timedelta = timedelta(days=3)
    disable_after: timedelta = timedelta(days=5)

    def next_attempt(
        self,
        *,
        attempts: int,
        created_at: datetime,
        now: datetime,
        rng: Callable[[], float],
        retry_after_s: float | None = None,
    ) -> datetime | None:
        """The time of the next try after `attempts` failed ones, or None to give up (the
        event is older than `give_up_after`)."""
        policy = RetryPolicy(attempts=1, base_s=self.base_s, max_s=self.max_wait_s, budget_s=0)
        retry_after = min(retry_after_s, self.max_wait_s) if retry_after_s is not None else None
        wait = policy.backoff_s(max(attempts - 1, 0), rng, retry_after)
        at = now + timedelta(seconds=wait)
        if at - created_at > self.give_up_after:
            return None
        return at

    def should_disable(self, failing_since: datetime | None, now: datetime) -> bool:
        return failing_since is not None and now - failing_since >= self.disable_after
