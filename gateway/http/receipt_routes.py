"""`GET /v1/receipts/keys`: the public keys that verify signed destruction receipts.

    GET /v1/receipts/keys     public (no API key: whoever holds a receipt may verify it)
      200  {"keys": [{"key_id", "algorithm": "Ed25519", "public_key" (base64url, 32 bytes),
           "created_at", "retired_at" (null for the current key)}]}, oldest first; retired
           keys stay listed so every receipt ever signed still verifies
      422  problem+json `unknown_field`: any query parameter (it takes none)

The list is read from the trust keys file on every call, so a `receipts rotate-key` made by
the CLI shows at once.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.http.appkeys import SETTINGS_KEY
from gateway.http.json_body import json_response
from gateway.http.validation import StrictBody, parse_query
from vault.trust import read_public_keys


class _NoQuery(StrictBody):
    pass


async def receipt_keys(request: web.Request) -> web.Response:
    parse_query(request.query, _NoQuery)
    path = request.app[SETTINGS_KEY].trust_keys_path
    keys = await asyncio.to_thread(read_public_keys, path)
    return json_response(
        {"keys": [k.to_public() for k in keys]}, headers={"Cache-Control": "max-age=60"}
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/receipts/keys", receipt_keys)
