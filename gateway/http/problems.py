"""RFC 9457 problem details: every error leaves the gateway as one JSON shape.

    {"type": "https://calendar-gateway.dev/problems/<code>", "title": ..., "status": N,
     "detail": ..., "code": "<code>", ...extra}

A key provider outage (the vault's KekProviderError or KeyringError) becomes 503
`key_provider_unavailable` with Retry-After. Other unexpected exceptions become a 500 problem
with no detail: the stack trace goes to the log
(which redacts secrets), never to the caller.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web

from gateway.errors import ProblemError
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
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ProblemError as exc:
        return problem_response(
            exc.status, exc.code, exc.message, title=exc.title, extra=exc.extra, headers=exc.headers
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        detail = (
            exc.reason if exc.text is None or exc.text.startswith(str(exc.status)) else exc.text
        )
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return problem_response(exc.status, code, detail, headers=headers)
    except (KekProviderError, KeyringError) as exc:
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
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem_response(500, "internal_error", "The gateway failed to handle this request.")
