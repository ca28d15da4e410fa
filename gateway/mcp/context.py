"""Who is calling a tool, and with which gateway: one context variable per MCP request.

The `/mcp` handler authenticates the API key exactly as the REST API does, then runs the MCP
request inside `calling(app, principal)`. The MCP server runs stateless (each HTTP request is
handled within the handler's own task), so the variable reaches the tool function.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from aiohttp import web

from gateway.apikeys import Principal


@dataclass(frozen=True)
class ToolCall:
    """The application (its services) and the authenticated caller of one MCP request.

    `integrations` collects the ids of the caller's own integrations a tool looked up, for the
    audit entries (ids the caller merely named, maybe another tenant's, are not recorded)."""

    app: web.Application
    principal: Principal
    integrations: list[str] = field(default_factory=list)


_CURRENT: ContextVar[ToolCall | None] = ContextVar("gateway_mcp_call", default=None)


@contextmanager
def calling(app: web.Application, principal: Principal) -> Iterator[ToolCall]:
    call = ToolCall(app, principal)
    token = _CURRENT.set(call)
    try:
        yield call
    finally:
        _CURRENT.reset(token)


def current_call() -> ToolCall:
    call = _CURRENT.get()
    if call is None:
        # Only reachable if a tool is run outside the authenticated /mcp handler.
        raise RuntimeError("MCP tool called outside an authenticated request")
    return call
