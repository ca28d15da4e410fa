"""`GET /readyz`: may a load balancer send traffic to this process?

Ready means: the database answers, its schema is at this code's migration head, and the key
provider can wrap and unwrap (a file keyring, an HSM session or a KMS call). Each check is
reported by name with `ok` or a short non-secret reason; 200 when all pass, 503 otherwise.
The answer is cached for a few seconds so frequent probes do not turn into a KMS bill.
(`GET /healthz` only says the process is alive: restart it if that fails, not this.)
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web
from sqlalchemy import text

from gateway.db.migrate import current_revision, head_revision
from gateway.http.appkeys import ENGINE_KEY, VAULT_KEY
from gateway.http.json_body import json_response

CACHE_S = 5.0
CHECK_TIMEOUT_S = 5.0

_CACHE = web.AppKey("readyz_cache", dict)


async def _database(app: web.Application) -> str:
    engine = app[ENGINE_KEY]
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
    head = await asyncio.to_thread(head_revision)
    current = await current_revision(engine)
    return "ok" if current == head else f"schema at {current}, code needs {head}"


async def _vault(app: web.Application) -> str:
    await app[VAULT_KEY].self_test()
    return "ok"


async def _run(name: str, check: Any, app: web.Application) -> tuple[str, str]:
    try:
        return name, await asyncio.wait_for(check(app), CHECK_TIMEOUT_S)
    except TimeoutError:
        return name, "timed out"
    except Exception as exc:
        # The type only: driver and provider messages can quote connection strings.
        return name, f"failed ({type(exc).__name__})"


async def readyz(request: web.Request) -> web.Response:
    cache: dict[str, Any] = request.app[_CACHE]
    now = time.monotonic()
    if cache.get("until", 0.0) <= now:
        results = await asyncio.gather(
            _run("database", _database, request.app), _run("key_provider", _vault, request.app)
        )
        cache["checks"] = dict(results)
        cache["until"] = now + CACHE_S
    checks: dict[str, str] = cache["checks"]
    ready = all(v == "ok" for v in checks.values())
    return json_response(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status=200 if ready else 503,
        headers={"Cache-Control": "no-store"},
    )


def setup(app: web.Application) -> None:
    app[_CACHE] = {}
    app.router.add_get("/readyz", readyz)
