"""A gateway process that disconnects one integration and dies right after a given step.

Run by the crash tests as `python -m tests.connections.disconnect_worker`, with a JSON job on
stdin:

    {"settings": {...load_settings overrides...}, "tenant_id": "acme",
     "integration_id": "int_...", "exit_after_step": 3, "lease_ttl_s": 60}

It builds the same service the gateway builds (real database, vault, OAuth client against the
emulator) with a step hook that calls `os._exit(137)` after step `exit_after_step`: no cleanup,
no lease release, no pending writes flushed, as when the process is killed. Without a crash it
prints the outcome's JSON on stdout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from typing import Any

import aiohttp

from gateway.audit import AuditLog
from gateway.connections.disconnect import DisconnectService
from gateway.connections.repository import IntegrationRepository
from gateway.db.engine import create_engine
from gateway.google.oauth_client import GoogleOAuthClient
from gateway.google.retry import RetryPolicy
from gateway.settings import load_settings
from gateway.webhooks.outbox import IntegrationOutbox
from gateway.wiring import open_vault

KILLED = 137  # what a shell reports for SIGKILL


def _exit_after(step: int | None) -> Any:
    def hook(completed: int) -> None:
        if completed == step:
            sys.stderr.flush()
            os._exit(KILLED)

    return hook


async def main(job: dict[str, Any]) -> int:
    settings = load_settings(env_file=None, **job["settings"])
    engine = await create_engine(settings.database_url)
    vault = await open_vault(settings, engine)
    try:
        async with aiohttp.ClientSession() as http:
            service = DisconnectService(
                repository=IntegrationRepository(engine, announcer=IntegrationOutbox()),
                vault=vault,
                audit=AuditLog(engine),
                revoker=GoogleOAuthClient.from_settings(http, settings),
                retry=RetryPolicy(attempts=2, base_s=0.01, max_s=0.05, budget_s=1.0),
                owner=f"worker:{os.getpid()}",
                lease_ttl_s=float(job.get("lease_ttl_s", 60.0)),
                step_hook=_exit_after(job.get("exit_after_step")),
            )
            outcome = await service.disconnect(job["tenant_id"], job["integration_id"])
    finally:
        await vault.close()
        await engine.dispose()
    print(json.dumps(outcome.to_public() if outcome else None))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.DEBUG, format="%(name)s %(levelname)s %(message)s")
    sys.exit(asyncio.run(main(json.loads(sys.stdin.read()))))
