"""Booking's failures, as HTTP callers and MCP tools see them (each a problem with a stable code).

    ProblemError (gateway.errors)
    └── BookingError                  base of every booking failure
        ├── IdempotencyKeyInvalid     400 idempotency_key_required / invalid_idempotency_key
        ├── IdempotencyKeyReused      422 idempotency_key_reused: same key, another request
        ├── SlotBusy                  409 slot_busy: the slot is not free (`conflicts` lists
        │                             the busy intervals inside it)
        ├── AvailabilityUnknown       503 availability_unknown: the calendar's busy time could
        │                             not be known fresh enough, so it is not booked blindly
        ├── EventNotFound             404 event_not_found: no event this gateway created for
        │                             this integration has that id
        └── EtagMismatch              412 etag_mismatch: the event changed since that etag

Other failures reach callers as the existing errors: InvalidInput (422, naming the field),
IntegrationInactive (409), and Google failures through `gateway.http.lookup.google_problem`
(503 with Retry-After, 403 insufficient_google_scope, ...).
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.errors import ProblemError


class BookingError(ProblemError):
    """Base of every booking failure."""

    code = "booking_error"


class IdempotencyKeyInvalid(BookingError):
    """The Idempotency-Key header is missing or not 1-200 printable ASCII characters."""

    code = "invalid_idempotency_key"
    status = 400
    title = "Bad Request"


class IdempotencyKeyReused(BookingError):
    code = "idempotency_key_reused"
    status = 422
    title = "Unprocessable Content"

    def __init__(self) -> None:
        super().__init__(
            "this Idempotency-Key was used for a different request; use a new key for a new booking"
        )


class SlotBusy(BookingError):
    code = "slot_busy"
    status = 409
    title = "Conflict"

    def __init__(self, conflicts: Sequence[dict[str, str]]) -> None:
        super().__init__(
            "the calendar is busy during this slot; pick another slot",
            extra={"conflicts": list(conflicts)},
        )


class AvailabilityUnknown(BookingError):
    code = "availability_unknown"
    status = 503
    title = "Service Unavailable"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            "the calendar's busy time cannot be confirmed right now, so the slot was not "
            "booked; retry after the delay given (or book with if_free=false)",
            extra={"retry_after_s": retry_after_s},
            headers={"Retry-After": str(retry_after_s)},
        )


class EventNotFound(BookingError):
    code = "event_not_found"
    status = 404
    title = "Not Found"

    def __init__(self) -> None:
        super().__init__("no event created by this gateway has this id for this integration")


class EtagMismatch(BookingError):
    code = "etag_mismatch"
    status = 412
    title = "Precondition Failed"

    def __init__(self) -> None:
        super().__init__(
            "the event changed since the etag given in If-Match; read it again and retry"
        )
