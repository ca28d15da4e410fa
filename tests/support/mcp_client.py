"""The official MCP client, pointed at a running gateway's /mcp with an API key."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, TextContent


@asynccontextmanager
async def mcp_client(base_url: str, api_key: str | None) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key is not None else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(f"{base_url}/mcp", http_client=http)) as client,
    ):
        yield client


def text_of(result: CallToolResult) -> dict[str, Any]:
    """The tool's JSON text (what a text-only agent reads)."""
    [block] = result.content
    assert isinstance(block, TextContent)
    data = json.loads(block.text)
    assert isinstance(data, dict)
    return data


def tool_error(result: CallToolResult) -> dict[str, Any]:
    assert result.is_error, result
    error = text_of(result)["error"]
    assert isinstance(error, dict)
    return error
