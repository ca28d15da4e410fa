"""The one way the gateway renders a JSON answer: `json_response(data, ...)`.

orjson instead of the standard library's `json` (through `web.json_response`): on the
availability hot path the body is a list of intervals rendered on every request, and orjson
encodes it several times faster. UTF-8 without `\\uXXXX` escapes, as RFC 8259 allows; the
Content-Type keeps `charset=utf-8`, as aiohttp's helper sent it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

JSON_CONTENT_TYPE = "application/json"


def json_response(
    data: Any,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    content_type: str = JSON_CONTENT_TYPE,
) -> web.Response:
    """`data` (dicts, lists, str, int, float, bool, None) as a JSON response."""
    return web.Response(
        body=orjson.dumps(data),
        status=status,
        headers=headers,
        content_type=content_type,
        charset="utf-8",
    )
