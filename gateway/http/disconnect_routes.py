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

from aiohttp import web

from gateway.bootstrap import DisconnectConfig
from gateway.connections.disconnect import DisconnectHooks
from gateway.errors import NotFound
from gateway.http.appkeys import (
    DISCONNECT_CONFIG_KEY,
    DISCONNECT_HOOKS_KEY,
    DISCONNECT_SERVICE_KEY,
    JOURNAL_REPLAY_KEY,
    SERVICES_KEY,
)
from gateway.http.auth import principal, requires_scope
from gateway.http.json_body import json_response
from gateway.periodic import periodic

log = logging.getLogger(__name__)


__all__ = [
    "DISCONNECT_CONFIG_KEY",
    "DISCONNECT_HOOKS_KEY",
    "DISCONNECT_SERVICE_KEY",
    "JOURNAL_REPLAY_KEY",
    "DisconnectConfig",
    "delete_integration",
    "disconnect_hooks",
    "setup",
]


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
    """Add the DELETE route, the deletion journal replay (at start-up and on a timer) and the
    background resumer of disconnects (the service itself is built by gateway.bootstrap)."""
    disconnect_hooks(app)
    if DISCONNECT_CONFIG_KEY not in app:
        app[DISCONNECT_CONFIG_KEY] = DisconnectConfig()

    async def disconnect_ctx(app: web.Application) -> AsyncIterator[None]:
        services = app[SERVICES_KEY]
        config, replay, service = (
            services.disconnect_config,
            services.journal_replay,
            services.disconnect,
        )
        # Before anything serves or syncs: a restored backup's integrations are shredded
        # again first. A broken journal raises here and start-up stops.
        await replay.replay()

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
