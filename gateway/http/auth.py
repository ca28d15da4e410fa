"""Bearer API-key authentication and scope checks for handlers."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.apikeys import SCOPES, Principal
from gateway.errors import Forbidden, Unauthenticated
from gateway.http.appkeys import APIKEYS_KEY
from gateway.livecalls import bind_caller, unbind_caller

_PRINCIPAL = web.RequestKey("principal", Principal)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def authenticate(request: web.Request) -> Principal:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthenticated("send `Authorization: Bearer <api key>`")
    return await request.app[APIKEYS_KEY].authenticate(value.strip())


def requires_scope(scope: str) -> Callable[[Handler], Handler]:
    """Decorate a handler: authenticate the caller and require `scope`.

    The principal is then available through `principal(request)`.
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            who = await authenticate(request)
            if scope not in who.scopes:
                raise Forbidden(f"this API key lacks the {scope} scope", extra={"scope": scope})
            request[_PRINCIPAL] = who
            bound = bind_caller(who.tenant_id, who.key_id)
            try:
                return await handler(request)
            finally:
                unbind_caller(bound)

        wrapper.required_scope = scope  # type: ignore[attr-defined]
        return wrapper

    return decorate


def principal(request: web.Request) -> Principal:
    """The caller authenticated by `requires_scope`."""
    try:
        return request[_PRINCIPAL]
    except KeyError:
        raise RuntimeError("handler is not decorated with requires_scope") from None
