"""Tool errors an agent can act on.

A failed tool call answers `isError: true` with one JSON text:

    {"error": {"code": "integration_inactive", "message": "...", "advice": "...", ...}}

`code` is the REST API's problem code (the same names, so one vocabulary for both faces),
`advice` says in plain words what the agent should do next, and the problem's extra members
(status, conflicts, retry_after_s, unknown calendars, ...) come along. Never a stack trace or a
token: unexpected exceptions become a generic `internal_error` and go to the log.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.errors import ProblemError

# What an agent should do for each code; the default covers the rest.
ADVICE: dict[str, str] = {
    "integration_inactive": (
        "This calendar connection cannot be used now. If its status is needs_reauth, ask the "
        "user to reconnect their Google Calendar; if it is disconnecting or disconnected, the "
        "user removed it: do not book on it."
    ),
    "integration_not_found": (
        "No such calendar connection for this API key. Call list_calendar_connections to get "
        "valid connection ids."
    ),
    "slot_busy": (
        "The requested time is no longer free. Pick another slot (find_meeting_slots) and offer "
        "it to the lead; `conflicts` lists the busy intervals."
    ),
    "rate_limited": (
        "Google is rate limiting this calendar. Wait `retry_after_s` seconds, then retry the "
        "same call (with the same idempotency key for bookings)."
    ),
    "google_unavailable": (
        "Google is temporarily unavailable. Wait `retry_after_s` seconds, then retry the same "
        "call (with the same idempotency key for bookings)."
    ),
    "live_calls_limited": (
        "This API key (or its tenant) has made too many live Google calls this minute; nothing "
        "was asked or booked. Wait `retry_after_s` seconds and retry the same call; questions "
        "within the synced horizon are answered from the copy and are not limited."
    ),
    "incomplete_availability": (
        "Availability is unknown for the calendars in `unknown_calendars` (each names its "
        "connection_id and calendar_id, null meaning all of that connection's calendars, and "
        "why: Google could not be reached and there is no fresh copy). Do not treat that time "
        "as free. `known` or `safe_slots` may still be used; for the rest, retry after "
        "`retry_after_s` seconds or ask the person directly."
    ),
    "insufficient_scope": (
        "This API key is not allowed to do that. Ask the operator for a key with the scope "
        "named in `scope`."
    ),
    "insufficient_google_scope": (
        "The user did not grant the calendar permission this needs. Ask them to reconnect and "
        "accept the calendar permissions."
    ),
    "idempotency_key_reused": (
        "This idempotency key was already used for a different booking. Use a new key for a "
        "new booking; reuse a key only to retry exactly the same request."
    ),
    "etag_mismatch": (
        "The meeting changed since that etag (someone edited it). Check with the user, then "
        "retry without `etag` to apply your change anyway."
    ),
    "availability_unknown": (
        "The calendar could not be read just now, so nothing was booked (never blind). Wait "
        "`retry_after_s` seconds and retry with the same idempotency key."
    ),
    "invalid_idempotency_key": (
        "The idempotency key must be 1-200 printable ASCII characters without spaces, e.g. a "
        "UUID: fix it and call again."
    ),
    "invalid_input": "An argument is wrong: read `message`, fix the argument and call again.",
    "invalid_field": (
        "The argument named in `field` is wrong: read `message`, fix it and call again. Every "
        "time is RFC 3339 with an offset, e.g. 2026-11-23T09:00:00+01:00."
    ),
    "google_not_configured": (
        "This gateway has no Google connection configured; report it to the operator."
    ),
    "event_not_found": (
        "No such event created by this gateway on this connection. Only meetings booked "
        "through the gateway can be changed or cancelled."
    ),
}
DEFAULT_ADVICE = "Read the message; if it persists, report it to the operator."


class ToolFailure(Exception):
    """A tool's refusal, rendered as the JSON error text above."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra

    @classmethod
    def from_problem(cls, problem: ProblemError) -> ToolFailure:
        extra = {k: v for k, v in problem.extra.items() if k not in ("code", "message")}
        return cls(problem.code, problem.message, **extra)

    def payload(self) -> dict[str, Any]:
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "advice": ADVICE.get(self.code, DEFAULT_ADVICE),
                **self.extra,
            }
        }

    def text(self) -> str:
        return json.dumps(self.payload(), sort_keys=False, default=str)
