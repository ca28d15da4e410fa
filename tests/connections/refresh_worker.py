"""A gateway process in miniature, for the cross-process single-flight test; also the helpers
the token tests share (building a TokenManager from URLs, seeding an integration).

Run as a script it builds the same services `create_app()` would (engine, vault on the given
keyring, OAuth client, TokenManager), prints `ready`, waits for a line on stdin (so two workers
start together), makes `--calls` concurrent `access_token()` calls and prints one JSON line:
`{"digests": [sha256 hex of each distinct token], "errors": {name: count}}`. Tokens are never
printed. The client secret comes from the environment (GOOGLE_CLIENT_SECRET), not argv.

    python tests/connections/refresh_worker.py --database-url URL --keyring PATH \
        --google-url URL --client-id ID --integration-id ID --calls 250
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

if __name__ == "__main__" and __package__ in (None, ""):
    # Run as a script: make the repository importable the way pytest does.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gateway.audit import AuditLog
from gateway.connections.model import (
    PURPOSE_ACCESS_TOKEN,
    PURPOSE_REFRESH_TOKEN,
    Integration,
    Status,
)
from gateway.connections.repository import IntegrationRepository, SealedTokens
from gateway.connections.tokens import TokenManager
from gateway.db.engine import create_engine
from gateway.google.oauth_client import GoogleOAuthClient
from gateway.settings import load_settings
from gateway.webhooks.outbox import IntegrationOutbox
from gateway.wiring import open_vault
from vault.envelope import SealContext
from vault.service import Vault


def digest(token: str) -> str:
    """What a test may print or compare instead of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Services:
    """The token-keeping services of one gateway process."""

    repo: IntegrationRepository
    audit: AuditLog
    vault: Vault
    oauth: GoogleOAuthClient
    tokens: TokenManager


@asynccontextmanager
async def open_services(
    database_url: str,
    keyring: Path,
    google_url: str,
    client_id: str,
    client_secret: str,
    **manager_options: Any,
) -> AsyncIterator[Services]:
    """Engine, vault, OAuth client and TokenManager as `create_app()` wires them."""
    settings = load_settings(
        env_file=None,
        database_url=database_url,
        kek_uri=f"file:{keyring}",
        google_client_id=client_id,
        google_client_secret=client_secret,
        google_token_uri=f"{google_url}/token",
        google_revoke_uri=f"{google_url}/revoke",
    )
    engine = await create_engine(settings.database_url)
    vault = await open_vault(settings, engine)
    try:
        async with aiohttp.ClientSession() as session:
            repo = IntegrationRepository(engine, announcer=IntegrationOutbox())
            audit = AuditLog(engine)
            oauth = GoogleOAuthClient.from_settings(session, settings)
            manager_options.setdefault("margin_s", settings.token_refresh_margin_s)
            tokens = TokenManager(
                repository=repo, vault=vault, oauth=oauth, audit=audit, **manager_options
            )
            yield Services(repo, audit, vault, oauth, tokens)
    finally:
        await vault.close()
        await engine.dispose()


async def seed_integration(
    repo: IntegrationRepository,
    vault: Vault,
    *,
    integration_id: str,
    refresh_token: str | None,
    access_token: str | None,
    access_token_expires_at: datetime | None,
    google_sub: str,
    tenant_id: str = "acme",
    status: Status = Status.ACTIVE,
    now: datetime | None = None,
) -> Integration:
    """Insert an integration with tokens sealed the way the connect flow seals them."""
    created = now or datetime.now(UTC)
    await vault.ensure_data_key(tenant_id, integration_id)

    async def seal(purpose: str, token: str | None) -> bytes | None:
        if token is None:
            return None
        return await vault.seal(SealContext(tenant_id, integration_id, purpose), token.encode())

    integration = Integration(
        id=integration_id,
        tenant_id=tenant_id,
        user_id="u-1",
        status=status,
        google_sub=google_sub,
        google_email=None,
        granted_scopes=frozenset({"https://www.googleapis.com/auth/calendar.events.freebusy"}),
        created_at=created,
        updated_at=created,
    )
    await repo.insert(
        integration,
        SealedTokens(
            refresh_token=await seal(PURPOSE_REFRESH_TOKEN, refresh_token),
            access_token=await seal(PURPOSE_ACCESS_TOKEN, access_token),
            access_token_expires_at=access_token_expires_at,
        ),
    )
    return integration


async def stored_token(
    repo: IntegrationRepository, vault: Vault, integration_id: str, purpose: str
) -> str | None:
    """Open a stored token (tests only: to compare with what callers got)."""
    found = await repo.read_for_refresh(integration_id)
    assert found is not None
    integration, sealed = found
    blob = sealed.refresh_token if purpose == PURPOSE_REFRESH_TOKEN else sealed.access_token
    if blob is None:
        return None
    ctx = SealContext(integration.tenant_id, integration_id, purpose)
    return (await vault.open(ctx, blob)).decode()


def expired(clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> datetime:
    """An expiry an hour in the past."""
    return clock() - timedelta(hours=1)


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    async with open_services(
        args.database_url,
        Path(args.keyring),
        args.google_url,
        args.client_id,
        os.environ["GOOGLE_CLIENT_SECRET"],
    ) as services:
        # Warm up (engine connection, vault key) before the start signal, as a live process is.
        await services.repo.get_by_id(args.integration_id)
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        results = await asyncio.gather(
            *(services.tokens.access_token(args.integration_id) for _ in range(args.calls)),
            return_exceptions=True,
        )
    errors = Counter(type(r).__name__ for r in results if isinstance(r, BaseException))
    digests = sorted({digest(r) for r in results if isinstance(r, str)})
    return {"digests": digests, "errors": dict(errors)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--keyring", required=True)
    parser.add_argument("--google-url", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--integration-id", required=True)
    parser.add_argument("--calls", type=int, default=250)
    print(json.dumps(asyncio.run(_run(parser.parse_args()))), flush=True)


if __name__ == "__main__":
    main()
