"""Scripted failures: "the next N matching calls answer 429 / 403 rate limit / 500 / 503, or hang,
or are applied and then never answered".

A `Fault` matches a request by endpoint (a name such as `token`, `events.list`, a glob such as
`events.*`, or a path prefix starting with `/`) and/or by user (sub or email, resolved by the
middleware from the bearer token, refresh token, code or login_hint). The first matching fault
with calls left is consumed. Bodies copy Google's shapes: the Calendar envelope with domain
`usageLimits` for rate limits, and the OAuth `{"error", "error_description"}` body on the OAuth
endpoints (whose wording for these cases is not published; the ones used are what clients such
as google-auth treat as retryable).

Two modes model a response lost on the way back, the case idempotent clients must survive:
`drop_response` lets the call take effect and then closes the connection without an answer;
`after_delay_s` lets it take effect and then holds the answer back that long (a test can kill
the client meanwhile). Both need no status: the call itself succeeds at the emulator.

`hold` (in-process emulators only: an `asyncio.Event` cannot travel through the control API)
keeps the matching call waiting until the test sets the event, then answers normally: "this
call is in flight" for exactly as long as the test needs, on a machine of any speed.

Pure data and matching live here; `emulator/app.py` installs the middleware that applies them.
"""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
from dataclasses import dataclass, field, fields
from typing import Any

from emulator.errors import GoogleApiError, OAuthError

# Rate-limit reasons and their messages as Google words them.
RATE_LIMIT_MESSAGES = {
    "rateLimitExceeded": "Rate Limit Exceeded",
    "userRateLimitExceeded": "User Rate Limit Exceeded",
    "quotaExceeded": "Calendar usage limits exceeded.",
    "dailyLimitExceeded": "Daily Limit Exceeded",
}
FAULT_STATUSES = (403, 429, 500, 503)
OAUTH_ENDPOINTS = frozenset({"authorize", "token", "revoke", "userinfo", "certs", "openid-config"})


@dataclass
class Fault:
    """One scripted failure.

    `status` None with `delay_s` > 0 means "hang, then answer normally"; a status with a delay
    means "hang, then fail". `reason` picks the rate-limit reason for 403/429.
    `drop_response` applies the call, then closes the connection without answering;
    `after_delay_s` applies the call, then waits that long before answering (or dropping).
    """

    fault_id: int
    status: int | None = None
    reason: str | None = None
    times: int = 1
    user: str | None = None  # sub, as resolved when the fault was added
    endpoint: str | None = None
    delay_s: float = 0.0
    applied: int = 0
    drop_response: bool = False
    after_delay_s: float = 0.0
    hold: asyncio.Event | None = field(default=None, repr=False, compare=False)

    @property
    def applies_call(self) -> bool:
        """Whether the call itself runs (no scripted error status)."""
        return self.status is None

    def matches(self, endpoint: str, path: str, sub: str | None) -> bool:
        if self.times <= 0:
            return False
        if self.user is not None and self.user != sub:
            return False
        if self.endpoint is None:
            return True
        if self.endpoint.startswith("/"):
            return path.startswith(self.endpoint)
        return fnmatch.fnmatchcase(endpoint, self.endpoint)

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "hold"}

    def api_error(self) -> GoogleApiError:
        """The Calendar API envelope this fault answers with."""
        assert self.status is not None
        if self.status in (403, 429):
            reason = self.reason or "rateLimitExceeded"
            message = RATE_LIMIT_MESSAGES.get(reason, "Rate Limit Exceeded")
            return GoogleApiError(self.status, reason, message, domain="usageLimits")
        if self.status == 503:
            return GoogleApiError(
                503, self.reason or "backendError", "The service is currently unavailable."
            )
        return GoogleApiError(self.status, self.reason or "backendError", "Backend Error")

    def oauth_error(self) -> OAuthError:
        """The OAuth-endpoint body this fault answers with."""
        assert self.status is not None
        if self.status in (403, 429):
            return OAuthError(self.status, "rate_limit_exceeded", "Rate Limit Exceeded")
        if self.status == 503:
            return OAuthError(
                503, "temporarily_unavailable", "The service is currently unavailable."
            )
        return OAuthError(self.status, "internal_failure", "Backend Error")


@dataclass
class FaultInjector:
    """The scripted faults of one emulator. Tests call `add`; the middleware calls `take`."""

    faults: list[Fault] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1), repr=False)

    def add(
        self,
        *,
        status: int | None = None,
        reason: str | None = None,
        times: int = 1,
        user: str | None = None,
        endpoint: str | None = None,
        delay_s: float = 0.0,
        drop_response: bool = False,
        after_delay_s: float = 0.0,
        hold: asyncio.Event | None = None,
    ) -> Fault:
        """Script the next `times` matching calls. `user` must already be a sub here (the
        control API and `EmulatorState`-aware callers resolve emails first)."""
        if after_delay_s < 0:
            raise ValueError("after_delay_s must not be negative")
        if (drop_response or after_delay_s > 0) and status is not None:
            raise ValueError("drop_response and after_delay_s apply the call: give no status")
        if (
            status is None
            and delay_s <= 0
            and not drop_response
            and after_delay_s <= 0
            and hold is None
        ):
            raise ValueError(
                "a fault needs a status, a delay_s, drop_response, after_delay_s or hold"
            )
        if status is not None and status not in FAULT_STATUSES:
            raise ValueError(f"status must be one of {FAULT_STATUSES}")
        if reason is not None and status in (403, 429) and reason not in RATE_LIMIT_MESSAGES:
            raise ValueError(f"reason must be one of {sorted(RATE_LIMIT_MESSAGES)}")
        if times < 1:
            raise ValueError("times must be at least 1")
        if delay_s < 0:
            raise ValueError("delay_s must not be negative")
        fault = Fault(
            next(self._ids),
            status,
            reason,
            times,
            user,
            endpoint,
            delay_s,
            drop_response=drop_response,
            after_delay_s=after_delay_s,
            hold=hold,
        )
        self.faults.append(fault)
        return fault

    def take(self, endpoint: str, path: str, sub: str | None) -> Fault | None:
        """Consume one call of the first fault matching this request, if any."""
        for fault in self.faults:
            if fault.matches(endpoint, path, sub):
                fault.times -= 1
                fault.applied += 1
                return fault
        return None

    def pending(self) -> list[Fault]:
        """Faults with calls left."""
        return [f for f in self.faults if f.times > 0]

    def remove(self, fault_id: int) -> bool:
        before = len(self.faults)
        self.faults = [f for f in self.faults if f.fault_id != fault_id]
        return len(self.faults) != before

    def clear(self) -> None:
        self.faults.clear()
