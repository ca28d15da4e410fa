"""The gateway's error tree.

Every error the gateway raises on purpose derives from `GatewayError`. Each carries a stable
machine `code` (used as the `code` member of problem+json responses and in CLI messages) and a
message that is safe to show: no secret, no token, no personal data ever goes into one.

    GatewayError
    ├── ConfigurationError      a setting is missing or wrong (start-up stops)
    ├── StorageError            the database is unreachable or in the wrong shape
    │   └── NotMigratedError    the schema is behind the code's migrations
    └── ProblemError            an HTTP-facing error with a status (rendered as problem+json)
        ├── InvalidInput        422 (or 400): a value the caller sent is wrong; names the field
        ├── Unauthenticated     401: missing, malformed, unknown or revoked API key
        ├── Forbidden           403: the key lacks the scope the operation needs
        ├── NotFound            404: no such thing for this tenant (other tenants' too)
        └── TooManyRequests     429: a limit of the caller's key or tenant; says when to retry
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every deliberate gateway error."""

    code = "gateway_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class ConfigurationError(GatewayError):
    """A setting is missing or invalid; the message names the variable."""

    code = "configuration_error"


class StorageError(GatewayError):
    """The database cannot be used as configured."""

    code = "storage_error"


class NotMigratedError(StorageError):
    """The database schema is not at the revision this code needs."""

    code = "not_migrated"


class ProblemError(GatewayError):
    """An error answered to an HTTP caller as RFC 9457 problem details."""

    code = "bad_request"
    status = 400
    title = "Bad Request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        title: str | None = None,
        extra: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, code=code)
        if status is not None:
            self.status = status
        if title is not None:
            self.title = title
        self.extra = dict(extra or {})
        self.headers = {**self.default_headers(), **(headers or {})}

    def default_headers(self) -> dict[str, str]:
        return {}


class InvalidInput(ProblemError):
    code = "invalid_input"
    status = 422
    title = "Unprocessable Content"


class Unauthenticated(ProblemError):
    code = "unauthenticated"
    status = 401
    title = "Unauthorized"

    def default_headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class Forbidden(ProblemError):
    code = "insufficient_scope"
    status = 403
    title = "Forbidden"


class NotFound(ProblemError):
    code = "not_found"
    status = 404
    title = "Not Found"


class TooManyRequests(ProblemError):
    """429 with `Retry-After` (whole seconds, at least 1) and `retry_after_s` in the body."""

    code = "too_many_requests"
    status = 429
    title = "Too Many Requests"

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: int,
        code: str | None = None,
        extra: dict[str, object] | None = None,
    ) -> None:
        seconds = max(1, retry_after_s)
        super().__init__(
            message,
            code=code,
            extra={**(extra or {}), "retry_after_s": seconds},
            headers={"Retry-After": str(seconds)},
        )
