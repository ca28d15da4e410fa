"""Every request gets an id: the caller's `X-Request-ID` when it is safe to log, else a fresh
one. It is bound for the request's log lines and audit entries and echoed in the response
(problem+json answers too), so a user's report can be matched to the gateway's logs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.observability.context import accept_request_id, request_id_bound

HEADER = "X-Request-ID"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    with request_id_bound(accept_request_id(request.headers.get(HEADER))) as request_id:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers[HEADER] = request_id
            raise
        if not response.prepared:
            response.headers[HEADER] = request_id
        return response
