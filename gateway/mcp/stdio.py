"""`calendar-gateway mcp --stdio`: a local agent's stdin/stdout bridged to a gateway's /mcp.

    CALENDAR_GATEWAY_URL=https://gateway.example.com CALENDAR_GATEWAY_API_KEY=cgw_... \\
        calendar-gateway mcp --stdio

Agents that launch MCP servers as subprocesses (most desktop and CLI agents) talk JSON-RPC on
the child's stdin/stdout. This process forwards each message unchanged to the gateway's
streamable-HTTP endpoint with the API key, and each answer back: the tools, their scopes and
their audit stay in the gateway, one implementation for both transports. The API key is read
from the environment (never from argv, where `ps` would show it) and never printed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import httpx2
from mcp.client.streamable_http import streamable_http_client
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage

from gateway.errors import ConfigurationError

log = logging.getLogger(__name__)

URL_ENV = "CALENDAR_GATEWAY_URL"
KEY_ENV = "CALENDAR_GATEWAY_API_KEY"


@dataclass(frozen=True)
class BridgeConfig:
    url: str  # the gateway's /mcp endpoint
    api_key: str = field(repr=False)


def config_from_env(environ: dict[str, str] | None = None) -> BridgeConfig:
    env = os.environ if environ is None else environ
    base = env.get(URL_ENV, "").strip().rstrip("/")
    key = env.get(KEY_ENV, "").strip()
    if not base.startswith(("http://", "https://")):
        raise ConfigurationError(f"{URL_ENV} must be the gateway's http(s) base URL")
    if not key:
        raise ConfigurationError(f"{KEY_ENV} must hold an API key (cgw_...)")
    return BridgeConfig(url=base if base.endswith("/mcp") else base + "/mcp", api_key=key)


class _Source(Protocol):
    def __aiter__(self) -> AsyncIterator[SessionMessage | Exception]: ...


class _Sink(Protocol):
    async def send(self, item: SessionMessage, /) -> None: ...

    async def aclose(self) -> None: ...


async def _pump(source: _Source, sink: _Sink, what: str) -> None:
    try:
        async for message in source:
            if isinstance(message, Exception):
                # A transport error (unparsable line, HTTP failure): the message's own request
                # gets no answer and the agent's timeout handles it; the bridge keeps going.
                log.warning("%s: %s", what, type(message).__name__)
                continue
            await sink.send(message)
    finally:
        await sink.aclose()


async def run_bridge(config: BridgeConfig) -> None:
    """Forward messages both ways until the agent closes stdin."""
    headers = {"Authorization": f"Bearer {config.api_key}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60, connect=10)) as http,
        streamable_http_client(config.url, http_client=http) as (remote_in, remote_out),
        stdio_server() as (local_in, local_out),
        anyio.create_task_group() as tasks,
    ):
        tasks.start_soon(_pump, remote_in, local_out, "from gateway")
        # When the agent closes stdin the bridge is done: stop listening to the gateway too.
        await _pump(local_in, remote_out, "from agent")
        tasks.cancel_scope.cancel()
