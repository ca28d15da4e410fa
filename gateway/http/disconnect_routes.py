"""`DELETE /v1/integrations/{id}`: disconnect, and the background resumer of disconnects.

    DELETE /v1/integrations/{id}        scope connections:write
      200  the destruction receipt: {"id", "status": "disconnected", "revoked_at_google",
           "tokens_destroyed", "channels_stopped", "records_purged", "completed_at"}; the
           same receipt for every later call (idempotent)
      202  {"id", "status": "disconnecting", "disconnect_step"} with Retry-After: the
           disconnect is recorded but not finished within this request, because another
           gateway process holds the job (it was waited for `wait_s`) or a step failed (logged)
           and the background resumer retries it. Call again (or GET the integration) later.
      401  problem+json `unauthenticated`; 403 `insufficient_scope` (no connections:write)
      404  problem+json `integration_not_found`: unknown, or another tenant's (never 403)

The 200 answer also carries `receipt`: the signed receipt ({"receipt", "signature"}, see
gateway/connections/receipts.py), kept in the database for good.

The request runs the job inline when it can take the job's lease; its time is bounded by the
revocation's retry policy (by default 3 attempts of at most 10 s each plus backoff, about
32 s at worst) and the stopping of push channels before it (at most `PushConfig.stop_budget_s`,
10 s); the other steps are local. Every process runs a resumer that,
on startup and every `resume_interval_s`, continues every disconnect whose lease is free or
expired: a process killed mid-disconnect is finished by whichever process comes next.

Before the app serves anything (and before the sync scheduler starts), the deletion journal is
replayed (gateway/connections/reshred.py), then again every `journal_replay_interval_s`; a
broken journal stops start-up with one line naming the file and the line.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

from aiohttp import web

from gateway.connections.disconnect import DisconnectHooks, DisconnectService
from gateway.connections.journal import DeletionJournal
from gateway.connections.receipt_store import ReceiptStore
from gateway.connections.reshred import JournalReplay
from gateway.errors import NotFound
from gateway.google.oauth_client import TokenRevoker
from gateway.google.retry import RetryPolicy
from gateway.http.appkeys import (
    AUDIT_KEY,
    ENGINE_KEY,
    GOOGLE_OAUTH_KEY,
    INTEGRATIONS_KEY,
    SETTINGS_KEY,
    TOKENS_KEY,
    TRUST_KEY,
    VAULT_KEY,
)
from gateway.http.auth import principal, requires_scope
from gateway.http.json_body import json_response
from gateway.periodic import periodic
from gateway.sync.scheduler import default_owner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DisconnectConfig:
    """Timing of disconnects. `lease_ttl_s` must exceed the revocation's retry budget (the
    longest step) with margin; `wait_s` is how long a DELETE waits for another process's run."""

    # Each revoke attempt may take the OAuth client's 10 s timeout: 3 attempts and their waits
    # bound the revocation (and a DELETE) to about 32 s, well inside the lease.
    retry: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(attempts=3, base_s=0.5, max_s=2.0, budget_s=10.0)
    )
    lease_ttl_s: float = 60.0
    wait_s: float = 5.0
    poll_s: float = 0.2
    resume_interval_s: float = 30.0
    retry_after_s: int = 5
    # How long the revocation waits for an unreachable key provider before the disconnect
    # completes without revoking at Google (see DisconnectService._wait_for_key_provider).
    key_outage_patience_s: float = 24 * 3600.0
    # How often a running process replays the deletion journal (it always does at start-up).
    journal_replay_interval_s: float = 60.0


# Set before the app starts to change the defaults (tests shorten the timings).
DISCONNECT_CONFIG_KEY = web.AppKey("disconnect_config", DisconnectConfig)
DISCONNECT_HOOKS_KEY = web.AppKey("disconnect_hooks", DisconnectHooks)
DISCONNECT_SERVICE_KEY = web.AppKey("disconnect_service", DisconnectService)
JOURNAL_REPLAY_KEY = web.AppKey("journal_replay", JournalReplay)


def disconnect_hooks(app: web.Application) -> DisconnectHooks:
    """The hooks of disconnect steps 3 and 4; the sync engine appends to them from its own
    `setup(app)` (before the app starts)."""
    hooks = app.get(DISCONNECT_HOOKS_KEY)
    if hooks is None:
        hooks = DisconnectHooks()
        app[DISCONNECT_HOOKS_KEY] = hooks
    return hooks


@requires_scope("connections:write")
async def delete_integration(request: web.Request) -> web.Response:
    """Disconnect the caller's integration (see the module doc for the answers)."""
    who = principal(request)
    integration_id = request.match_info["integration_id"]
    config = request.app[DISCONNECT_CONFIG_KEY]
    outcome = await request.app[DISCONNECT_SERVICE_KEY].disconnect(
        who.tenant_id, integration_id, wait_s=config.wait_s, poll_s=config.poll_s
    )
    if outcome is None:
        raise NotFound("no such integration", code="integration_not_found")
    if outcome.receipt is not None:
        return json_response(outcome.to_public())
    return json_response(
        outcome.to_public(), status=202, headers={"Retry-After": str(config.retry_after_s)}
    )


def setup(app: web.Application) -> None:
    """Add the DELETE route and the disconnect service with its background resumer."""
    disconnect_hooks(app)
    if DISCONNECT_CONFIG_KEY not in app:
        app[DISCONNECT_CONFIG_KEY] = DisconnectConfig()

    async def disconnect_ctx(app: web.Application) -> AsyncIterator[None]:
        config = app[DISCONNECT_CONFIG_KEY]
        journal = DeletionJournal(
            app[SETTINGS_KEY].deletion_journal_path, app[TRUST_KEY].journal_key
        )
        receipts = ReceiptStore(app[ENGINE_KEY])
        replay = JournalReplay(
            journal=journal,
            receipts=receipts,
            engine=app[ENGINE_KEY],
            repository=app[INTEGRATIONS_KEY],
            vault=app[VAULT_KEY],
            audit=app[AUDIT_KEY],
            hooks=app[DISCONNECT_HOOKS_KEY],
        )
        # Before anything serves or syncs: a restored backup's integrations are shredded
        # again first. A broken journal raises here and start-up stops.
        await replay.replay()
        app[JOURNAL_REPLAY_KEY] = replay
        # The token feature's client (its context runs before this one). Without a Google
        # client nobody could have connected, but a disconnect must still destroy whatever is
        # stored: receipts then say revoked_at_google=false.
        revoker: TokenRevoker | None = app.get(GOOGLE_OAUTH_KEY)
        service = DisconnectService(
            repository=app[INTEGRATIONS_KEY],
            vault=app[VAULT_KEY],
            audit=app[AUDIT_KEY],
            revoker=revoker,
            # Step 2 (stopping watch channels) gets its tokens from the one TokenManager.
            tokens=app.get(TOKENS_KEY),
            retry=config.retry,
            owner=default_owner(),
            hooks=app[DISCONNECT_HOOKS_KEY],
            lease_ttl_s=config.lease_ttl_s,
            key_outage_patience=timedelta(seconds=config.key_outage_patience_s),
            signing=app[TRUST_KEY],
            receipts=receipts,
            journal=journal,
        )
        app[DISCONNECT_SERVICE_KEY] = service

        async def resume() -> None:
            # Finish the disconnects of crashed processes (they may wait on Google: in the
            # background from the start, not before serving).
            completed = await service.resume_all()
            if completed:
                log.info("disconnect resumer completed %d disconnect(s)", completed)

        async def replay_again() -> None:
            # A broken journal is logged loudly every round until fixed (start-up replayed it).
            shredded = await replay.replay()
            if shredded:
                log.warning("deletion journal replay shredded %d integration(s) again", shredded)

        async with (
            periodic(
                resume,
                what="disconnect resumer",
                interval_s=config.resume_interval_s,
                first="background",
            ),
            periodic(
                replay_again,
                what="deletion journal replay",
                interval_s=config.journal_replay_interval_s,
                first="later",
            ),
        ):
            yield

    app.cleanup_ctx.append(disconnect_ctx)
    app.router.add_delete("/v1/integrations/{integration_id}", delete_integration)
