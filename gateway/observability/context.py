"""The id of the request being served, for every log line and audit entry it causes.

Set by the request-id middleware (gateway.http.request_id) for each HTTP request, by
background jobs for their own units of work; read by the log filter and the audit log. A
context variable: tasks started while handling a request inherit it, other requests never see it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

_REQUEST_ID: ContextVar[str | None] = ContextVar("gateway_request_id", default=None)

# What we accept from a caller's X-Request-ID: short and inert in logs (no spaces, quotes or
# control characters that could forge a log line).
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


def accept_request_id(presented: str | None) -> str:
    """The caller's id when it is safe to log, else a fresh one."""
    if presented and _SAFE_ID.match(presented):
        return presented
    return new_request_id()


def current_request_id() -> str | None:
    return _REQUEST_ID.get()


def bind_request_id(request_id: str) -> Token[str | None]:
    """Bind `request_id` until `unbind_request_id(token)`: the plain form of
    `request_id_bound`, for the HTTP middleware (a context manager costs a generator per
    request on the hot path)."""
    return _REQUEST_ID.set(request_id)


def unbind_request_id(token: Token[str | None]) -> None:
    _REQUEST_ID.reset(token)


@contextmanager
def request_id_bound(request_id: str) -> Iterator[str]:
    token = _REQUEST_ID.set(request_id)
    try:
        yield request_id
    finally:
        _REQUEST_ID.reset(token)
