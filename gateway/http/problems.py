"""RFC 9457 problem details: every error leaves the gateway as one JSON shape.

    {"type": "https://calendar-gateway.dev/problems/<code>", "title": ..., "status": N,
     "detail": ..., "code": "<code>", ...extra}

A key provider outage (the vault's KekProviderError or KeyringError) becomes 503
`key_provider_unavailable` with Retry-After. Other unexpected exceptions become a 500 problem
with no detail: the stack trace goes to the log
(which redacts secrets), never to the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web

from gateway.errors import ProblemError
from gateway.http.json_body import json_response
from vault.errors import KekProviderError, KeyringError

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://calendar-gateway.dev/problems/"

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# A key provider outage is temporary and the caller can do nothing but wait: say so, instead of
# a bare 500 (the DEK cache and the synced copy keep most answers working meanwhile).
KEY_PROVIDER_RETRY_AFTER_S = 30

# Stable codes for errors aiohttp raises itself (routing, method, body size).
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    title: str | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if extra:
        body.update({k: v for k, v in extra.items() if k not in body})
    return json_response(body, status=status, headers=headers, content_type=PROBLEM_CONTENT_TYPE)


def problem_for(request: web.Request, exc: Exception) -> web.Response | None:
    """The problem+json answer to an exception a handler raised; None for an HTTPException
    below 400 (a redirect), which the caller re-raises for aiohttp to send."""
    if isinstance(exc, ProblemError):
        return problem_response(
            exc.status, exc.code, exc.message, title=exc.title, extra=exc.extra, headers=exc.headers
        )
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            return None
        code = _HTTP_CODES.get(exc.status, "http_error")
        detail = (
            exc.reason if exc.text is None or exc.text.startswith(str(exc.status)) else exc.text
        )
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return problem_response(exc.status, code, detail, headers=headers)
    if isinstance(exc, (KekProviderError, KeyringError)):
        log.warning(
            "key provider unavailable on %s %s: %s",
            request.method,
            request.path,
            type(exc).__name__,
        )
        return problem_response(
            503,
            "key_provider_unavailable",
            "The gateway's key provider cannot be reached; try again shortly.",
            headers={"Retry-After": str(KEY_PROVIDER_RETRY_AFTER_S)},
        )
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return problem_response(500, "internal_error", "The gateway failed to handle this request.")


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """`problem_for` as a middleware on its own (the gateway's app uses
    gateway.http.middleware, which includes it)."""
    try:
        return await handler(request)
    except Exception as exc:
        answer = problem_for(request, exc)
        if answer is None:
            raise
        return answer
