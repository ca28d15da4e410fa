"""Disconnect over real HTTP against the Google emulator, on SQLite and PostgreSQL: the receipt,
what Google and the database show afterwards, idempotency, tenant isolation, Google failing,
and a process killed after each step and resumed by another.

Every test that uses `stack` also has its gateway log lines scanned for every token the
emulator issued (tests/support/stack.py); the crash worker's log output is scanned here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.apikeys import ApiKeyStore
from gateway.app import create_app
from gateway.audit import AuditLog
from gateway.clock import utc_now
from gateway.connections.disconnect import DisconnectHooks, DisconnectService
from gateway.connections.errors import IntegrationInactive
from gateway.connections.model import (
    PURPOSE_ACCESS_TOKEN,
    PURPOSE_REFRESH_TOKEN,
    Integration,
    Status,
    new_integration_id,
)
from gateway.connections.repository import SealedTokens
from gateway.db.engine import sqlite_path
from gateway.db.schema import integrations
from gateway.google.calendar import TokenSource
from gateway.google.oauth_client import GoogleOAuthClient
from gateway.google.retry import RetryPolicy
from gateway.http.appkeys import GOOGLE_OAUTH_KEY, INTEGRATIONS_KEY, TOKENS_KEY, VAULT_KEY
from gateway.http.disconnect_routes import (
    DISCONNECT_CONFIG_KEY,
    DisconnectConfig,
    disconnect_hooks,
)
from tests.support.disconnect import (
    Connected,
    assert_destroyed,
    integration_row,
    key_row,
    revoke_calls,
)
from tests.support.key_outage import cut_off
from tests.support.processes import expire_leases, until
from tests.support.stack import (
    ALICE,
    ALICE_SUB,
    GATEWAY_CLIENT_ID,
    Stack,
    assert_no_secret_logged,
    issued_secrets,
)
from vault.envelope import SealContext

SCOPES = ("openid", "email", "https://www.googleapis.com/auth/calendar.events.freebusy")
REPO_ROOT = Path(__file__).resolve().parents[2]

# Short timings so failure paths take milliseconds, not the production seconds.
FAST = DisconnectConfig(
    retry=RetryPolicy(attempts=3, base_s=0.01, max_s=0.02, budget_s=5.0),
    lease_ttl_s=30.0,
    # The background resumer (every 0.1 s) may take a fresh job before the DELETE does; the
    # DELETE then waits for that run. On a loaded machine that run can take a second or two.
    wait_s=3.0,
    poll_s=0.05,
    resume_interval_s=0.1,
    retry_after_s=1,
)


async def connected(
    stack: Stack, *, tenant_id: str = "acme", status: Status = Status.ACTIVE
) -> Connected:
    """Alice's integration, created the way the connect flow stores one: tokens from Google
    (the emulator), a data key, sealed blobs, the row."""
    issued = stack.google.issue_tokens(ALICE_SUB, GATEWAY_CLIENT_ID, SCOPES, offline=True)
    assert issued.refresh_token is not None
    integration_id = new_integration_id(os.urandom(12))
    vault = stack.app[VAULT_KEY]
    await vault.ensure_data_key(tenant_id, integration_id)
    refresh_blob = await vault.seal(
        SealContext(tenant_id, integration_id, PURPOSE_REFRESH_TOKEN),
        issued.refresh_token.encode(),
    )
    access_blob = await vault.seal(
        SealContext(tenant_id, integration_id, PURPOSE_ACCESS_TOKEN), issued.token.encode()
    )
    now = utc_now()
    await stack.app[INTEGRATIONS_KEY].insert(
        Integration(
            id=integration_id,
            tenant_id=tenant_id,
            user_id="u-1",
            status=status,
            google_sub=ALICE_SUB,
            google_email=ALICE,
            granted_scopes=frozenset(SCOPES),
            created_at=now,
            updated_at=now,
        ),
        SealedTokens(refresh_blob, access_blob, now + timedelta(hours=1)),
    )
    key = await key_row(stack.engine, integration_id)
    assert key is not None
    return Connected(
        id=integration_id,
        tenant_id=tenant_id,
        refresh_token=issued.refresh_token,
        access_token=issued.token,
        refresh_blob=refresh_blob,
        access_blob=access_blob,
        wrapped_key=bytes(key["wrapped"]),
    )


async def delete(
    stack: Stack, integration_id: str, *, key: str | None = None, base_url: str | None = None
) -> tuple[int, dict[str, str], dict[str, Any]]:
    url = (base_url or stack.base_url) + f"/v1/integrations/{integration_id}"
    async with stack.http.delete(url, headers=stack.auth(key)) as response:
        return response.status, dict(response.headers), dict(await response.json())


async def get_public(stack: Stack, integration_id: str) -> dict[str, Any]:
    """The integration as the agent's backend reads it (GET /v1/integrations/{id})."""
    url = stack.url(f"/v1/integrations/{integration_id}")
    async with stack.http.get(url, headers=stack.auth()) as response:
        assert response.status == 200, await response.text()
        return dict(await response.json())


async def assert_audit_clean(stack: Stack, c: Connected) -> list[Any]:
    entries = await AuditLog(stack.engine).entries(integration_id=c.id)
    text = repr(entries)
    for secret in (ALICE, c.refresh_token, c.access_token):
        assert secret not in text
    return entries


@asynccontextmanager
async def gateway(
    stack: Stack, config: DisconnectConfig = FAST, hooks: DisconnectHooks | None = None
) -> AsyncIterator[str]:
    """A second gateway process on the same database and keyring (another replica, or the
    restarted one), with `config` and the sync engine's `hooks`; yields its base URL."""
    app = create_app(stack.settings, engine=stack.engine)
    app[DISCONNECT_CONFIG_KEY] = config
    if hooks is not None:
        registered = disconnect_hooks(app)
        registered.channel_stoppers.extend(hooks.channel_stoppers)
        registered.record_purgers.extend(hooks.record_purgers)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


# -- the happy path ----------------------------------------------------------------------------


async def test_disconnect_after_the_real_connect_flow(stack: Stack) -> None:
    """Connected through the browser journey, used by the agent (a token handed out), then
    disconnected: Google shows the grant revoked and nothing Google issued is left."""
    connected_via = await stack.connect(ALICE, user_id="u-7")
    integration_id = connected_via["integration_id"]
    assert await stack.app[TOKENS_KEY].access_token(integration_id)

    status, _, receipt = await delete(stack, integration_id)

    assert status == 200 and receipt["revoked_at_google"] is True
    assert [g.revoked_by for g in stack.google.revoked_grants(ALICE)] == ["revoke_endpoint"]
    row = await integration_row(stack.engine, integration_id)
    assert row["refresh_token"] is None and row["access_token"] is None
    assert await key_row(stack.engine, integration_id) is None
    with pytest.raises(IntegrationInactive):
        await stack.app[TOKENS_KEY].access_token(integration_id)
    db_file = sqlite_path(stack.settings.database_url)
    if db_file is not None:
        issued = [s.encode() for s in issued_secrets(stack.google)]
        assert await asyncio.to_thread(_file_hits, db_file, issued) == []


async def test_disconnect_active_integration(stack: Stack) -> None:
    c = await connected(stack)

    status, _, receipt = await delete(stack, c.id)

    assert status == 200, receipt
    assert set(receipt) == {
        "id",
        "status",
        "revoked_at_google",
        "tokens_destroyed",
        "channels_stopped",
        "records_purged",
        "completed_at",
        "receipt",
    }
    assert set(receipt["receipt"]) == {"receipt", "signature"}
    assert receipt["id"] == c.id and receipt["status"] == "disconnected"
    assert receipt["revoked_at_google"] is True and receipt["tokens_destroyed"] is True
    assert receipt["channels_stopped"] == 0 and receipt["records_purged"] == 0
    assert receipt["completed_at"].endswith("Z")
    # Google shows the grant revoked, by our call.
    revoked = stack.google.revoked_grants(ALICE)
    assert [g.revoked_by for g in revoked] == ["revoke_endpoint"]
    assert revoke_calls(stack, status=200) == 1
    await assert_destroyed(stack, c)
    assert (await get_public(stack, c.id))["status"] == "disconnected"
    entries = await assert_audit_clean(stack, c)
    assert [(e.action, e.outcome) for e in entries] == [
        ("disconnect_requested", "ok"),
        ("disconnect", "ok"),
    ]
    assert entries[1].detail["revocation"] == "revoked"
    assert entries[1].detail["key_destroyed"] is True

    # Idempotent: the same receipt, byte for byte, and nothing more happens at Google.
    again_status, _, again = await delete(stack, c.id)
    assert again_status == 200 and again == receipt
    assert revoke_calls(stack) == 1
    assert len(await AuditLog(stack.engine).entries(integration_id=c.id)) == 2


async def test_disconnect_needs_reauth_integration(stack: Stack) -> None:
    """The user removed our access at Google; the refresh had marked the integration."""
    c = await connected(stack)
    stack.google.revoke_user_access(ALICE)
    assert await stack.app[INTEGRATIONS_KEY].set_status(
        c.id, Status.NEEDS_REAUTH, reason="invalid_grant"
    )

    status, _, receipt = await delete(stack, c.id)

    # Google answered invalid_token: the grant is no longer valid there, which is what
    # revoked_at_google=true states (not that our call revoked it).
    assert status == 200
    assert receipt["revoked_at_google"] is True and receipt["tokens_destroyed"] is True
    assert revoke_calls(stack, status=400) == 1 and revoke_calls(stack, status=200) == 0
    await assert_destroyed(stack, c)
    entries = await assert_audit_clean(stack, c)
    assert entries[-1].detail["revocation"] == "already_revoked"


async def test_other_tenant_and_unknown_ids_are_404_and_change_nothing(stack: Stack) -> None:
    c = await connected(stack)
    before = dict(await integration_row(stack.engine, c.id))

    for integration_id, key in ((c.id, stack.other_tenant_key), ("int_" + "0" * 24, None)):
        url = stack.url(f"/v1/integrations/{integration_id}")
        async with stack.http.delete(url, headers=stack.auth(key)) as response:
            assert response.status == 404
            assert response.content_type == "application/problem+json"
            body = await response.json()
            assert body["code"] == "integration_not_found"
            assert c.id not in json.dumps(body) or key is None

    assert dict(await integration_row(stack.engine, c.id)) == before
    assert await key_row(stack.engine, c.id) is not None
    assert revoke_calls(stack) == 0
    assert await AuditLog(stack.engine).entries(integration_id=c.id) == []


async def test_disconnect_needs_the_write_scope(stack: Stack) -> None:
    c = await connected(stack)
    read_only = (await ApiKeyStore(stack.engine).create("acme", ("connections:read",))).value
    async with stack.http.delete(
        stack.url(f"/v1/integrations/{c.id}"), headers=stack.auth(read_only)
    ) as response:
        assert response.status == 403
        assert (await response.json())["code"] == "insufficient_scope"
    async with stack.http.delete(stack.url(f"/v1/integrations/{c.id}")) as response:
        assert response.status == 401
    assert (await integration_row(stack.engine, c.id))["status"] == "active"


# -- Google failing ---------------------------------------------------------------------------


async def test_transient_revoke_failures_are_retried(stack: Stack) -> None:
    c = await connected(stack)
    stack.google.inject_fault(status=503, endpoint="revoke", times=2)
    async with gateway(stack) as base_url:
        status, _, receipt = await delete(stack, c.id, base_url=base_url)
    assert status == 200 and receipt["revoked_at_google"] is True
    assert revoke_calls(stack, status=503) == 2 and revoke_calls(stack, status=200) == 1
    assert [g.revoked_by for g in stack.google.revoked_grants(ALICE)] == ["revoke_endpoint"]
    await assert_destroyed(stack, c)


async def test_revoke_failing_past_the_budget_still_destroys_tokens(stack: Stack) -> None:
    c = await connected(stack)
    stack.google.inject_fault(status=503, endpoint="revoke", times=50)
    async with gateway(stack) as base_url:
        status, _, receipt = await delete(stack, c.id, base_url=base_url)
    assert status == 200
    assert receipt["revoked_at_google"] is False and receipt["tokens_destroyed"] is True
    assert revoke_calls(stack, status=503) == FAST.retry.attempts
    assert stack.google.revoked_grants(ALICE) == []  # Google never confirmed
    await assert_destroyed(stack, c)
    entries = await assert_audit_clean(stack, c)
    assert (entries[-1].action, entries[-1].outcome) == ("disconnect", "not_revoked_at_google")
    assert entries[-1].detail["revocation"] == "google_failed"


async def test_unopenable_token_is_not_revoked_but_destroyed(stack: Stack) -> None:
    c = await connected(stack)
    tampered = bytearray(c.refresh_blob)
    tampered[-1] ^= 1
    async with stack.engine.begin() as conn:
        await conn.execute(
            integrations.update()
            .where(integrations.c.id == c.id)
            .values(refresh_token=bytes(tampered))
        )
    status, _, receipt = await delete(stack, c.id)
    assert status == 200 and receipt["revoked_at_google"] is False
    assert revoke_calls(stack) == 0
    await assert_destroyed(stack, c)
    entries = await assert_audit_clean(stack, c)
    assert entries[-1].detail["revocation"] == "token_unopenable"


# -- another process holds the job ---------------------------------------------------------------


async def test_202_while_another_process_holds_the_job(stack: Stack) -> None:
    c = await connected(stack)
    repo = stack.app[INTEGRATIONS_KEY]
    now = utc_now()
    # Another replica took the disconnect and is (as far as we can tell) still working on it.
    assert await repo.mark_disconnecting("acme", c.id, now)
    assert await repo.acquire_disconnect_lease(
        c.id, "other:1:abcd/1", now, now + timedelta(seconds=60)
    )

    async with gateway(stack) as base_url:
        status, headers, body = await delete(stack, c.id, base_url=base_url)
        assert status == 202
        assert body == {"id": c.id, "status": "disconnecting", "disconnect_step": 1}
        assert headers["Retry-After"] == str(FAST.retry_after_s)
        assert revoke_calls(stack) == 0  # nothing done behind the lease holder's back
        # From step 1 on, the agent sees it and its calls get no token.
        assert (await get_public(stack, c.id))["status"] == "disconnecting"
        with pytest.raises(IntegrationInactive):
            await stack.app[TOKENS_KEY].access_token(c.id)

        # The other replica gives up its lease: the next call finishes the job.
        await repo.release_disconnect_lease(c.id, "other:1:abcd/1")
        status, _, receipt = await delete(stack, c.id, base_url=base_url)
    assert status == 200 and receipt["revoked_at_google"] is True
    await assert_destroyed(stack, c)


async def test_concurrent_deletes_run_the_job_once(stack: Stack) -> None:
    c = await connected(stack)
    results = await asyncio.gather(*(delete(stack, c.id) for _ in range(4)))
    assert [status for status, _, _ in results] == [200] * 4
    assert all(body == results[0][2] for _, _, body in results)
    assert revoke_calls(stack) == 1
    entries = await AuditLog(stack.engine).entries(integration_id=c.id)
    assert [e.action for e in entries] == ["disconnect_requested", "disconnect"]
    await assert_destroyed(stack, c)


async def test_a_failing_step_answers_202_and_the_resumer_finishes(stack: Stack) -> None:
    c = await connected(stack)
    calls: list[str] = []

    async def flaky_purge(integration: Integration) -> int:
        calls.append(integration.id)
        if len(calls) == 1:
            raise RuntimeError("sync store briefly unavailable")
        return 3

    # No waiting: whether the DELETE's own run or the background resumer met the failure first,
    # the answer is 202 at once and the job stays durable.
    config = dataclasses.replace(FAST, wait_s=0.0)
    hooks = DisconnectHooks(record_purgers=[flaky_purge])
    async with gateway(stack, config=config, hooks=hooks) as base_url:
        status, headers, body = await delete(stack, c.id, base_url=base_url)
        assert status == 202 and "Retry-After" in headers
        assert body["status"] == "disconnecting" and body["disconnect_step"] in (1, 2, 3)
        await until(functools.partial(disconnected, stack, c))  # the resumer's work
        status, _, receipt = await delete(stack, c.id, base_url=base_url)
    assert status == 200
    assert receipt["records_purged"] == 3 and receipt["revoked_at_google"] is True
    assert revoke_calls(stack) == 1
    await assert_destroyed(stack, c)


async def test_hooks_of_the_sync_engine_are_counted(stack: Stack) -> None:
    c = await connected(stack)
    seen: list[tuple[str, str, Status]] = []

    async def stop_channels(integration: Integration, tokens: TokenSource) -> int:
        seen.append(("channels", integration.id, integration.status))
        return 2

    async def purge_records(integration: Integration) -> int:
        seen.append(("records", integration.id, integration.status))
        return 17

    service = DisconnectService(
        repository=stack.app[INTEGRATIONS_KEY],
        vault=stack.app[VAULT_KEY],
        audit=AuditLog(stack.engine),
        revoker=None,
        retry=FAST.retry,
        owner="test",
        hooks=DisconnectHooks([stop_channels], [purge_records]),
    )
    outcome = await service.disconnect("acme", c.id)
    assert outcome is not None and outcome.receipt is not None
    public = outcome.receipt.to_public()
    assert (public["channels_stopped"], public["records_purged"]) == (2, 17)
    # No Google client configured: nothing could confirm the revocation.
    assert public["revoked_at_google"] is False
    assert seen == [
        ("channels", c.id, Status.DISCONNECTING),
        ("records", c.id, Status.DISCONNECTING),
    ]
    await assert_destroyed(stack, c)


async def test_a_run_that_lost_its_lease_cannot_move_the_job(stack: Stack) -> None:
    """A process stalled past its lease while another took the job over: its step is not
    recorded and it stops; the new holder finishes."""
    c = await connected(stack)
    repo = stack.app[INTEGRATIONS_KEY]
    later = utc_now() + timedelta(minutes=5)

    async def stall(integration: Integration, tokens: TokenSource) -> int:
        assert await repo.acquire_disconnect_lease(
            integration.id, "other:2:beef/1", later, later + timedelta(minutes=1)
        )
        return 1

    def service(**kwargs: Any) -> DisconnectService:
        return DisconnectService(
            repository=repo,
            vault=stack.app[VAULT_KEY],
            audit=AuditLog(stack.engine),
            revoker=None,
            retry=FAST.retry,
            **kwargs,
        )

    outcome = await service(owner="stalled", hooks=DisconnectHooks([stall])).disconnect(
        "acme", c.id
    )
    # The stalled run's step 2 (its channel stopper) is not recorded.
    assert outcome is not None and outcome.receipt is None and outcome.step == 1
    row = await integration_row(stack.engine, c.id)
    assert (row["disconnect_step"], row["disconnect_lease_owner"]) == (1, "other:2:beef/1")

    resumed = service(owner="next", clock=lambda: later + timedelta(minutes=2))
    receipt = await resumed.run(c.id)
    assert receipt is not None and receipt.channels_stopped == 0
    await assert_destroyed(stack, c)


# -- killed after each step, resumed by another process -------------------------------------------


async def disconnected(stack: Stack, c: Connected) -> bool:
    return bool((await integration_row(stack.engine, c.id))["status"] == "disconnected")


async def run_worker(stack: Stack, c: Connected, exit_after_step: int, **job: Any) -> str:
    """Disconnect `c` in a separate gateway process that dies after `exit_after_step`; return
    its log output (already checked for secrets)."""
    settings = stack.settings
    secret = settings.google_client_secret
    assert secret is not None
    payload = {
        "settings": {
            "database_url": settings.database_url,
            "kek_uri": settings.kek_uri,
            "public_url": settings.public_url,
            "google_client_id": settings.google_client_id,
            "google_client_secret": secret.get_secret_value(),
            "google_token_uri": settings.google_token_uri,
            "google_revoke_uri": settings.google_revoke_uri,
        },
        "tenant_id": c.tenant_id,
        "integration_id": c.id,
        "exit_after_step": exit_after_step,
        **job,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.connections.disconnect_worker",
        cwd=REPO_ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    # The emulator serves the worker from this event loop while we wait.
    # A safety net only (a loaded machine starts Python slowly): the worker kills itself.
    out, err = await asyncio.wait_for(proc.communicate(json.dumps(payload).encode()), 300)
    log_text = err.decode(errors="replace")
    assert proc.returncode == 137, (proc.returncode, out, log_text[-2000:])
    secrets = {c.refresh_token, c.access_token, secret.get_secret_value()}
    assert_no_secret_logged(log_text.splitlines(), secrets)
    return log_text


def resuming_service(stack: Stack, http: aiohttp.ClientSession) -> DisconnectService:
    """A fresh service as after a restart; its clock runs ahead so the dead lease is expired."""
    return DisconnectService(
        repository=stack.app[INTEGRATIONS_KEY],
        vault=stack.app[VAULT_KEY],
        audit=AuditLog(stack.engine),
        revoker=GoogleOAuthClient.from_settings(http, stack.settings),
        retry=FAST.retry,
        owner="restarted",
        clock=lambda: utc_now() + timedelta(minutes=5),
    )


@pytest.mark.parametrize("killed_after", [1, 2, 3, 4, 5])
async def test_disconnect_resumes_after_a_kill(stack: Stack, killed_after: int) -> None:
    c = await connected(stack)

    await run_worker(stack, c, killed_after)

    row = await integration_row(stack.engine, c.id)
    assert (row["status"], row["disconnect_step"]) == ("disconnecting", killed_after)
    # The dead process still holds the lease after step 1 only if it got as far as taking it.
    assert row["disconnect_lease_owner"] is not None or killed_after == 1
    assert revoke_calls(stack) == (1 if killed_after >= 3 else 0)  # step 3 revokes
    # The dead process's lease keeps a live process without a clock jump off the job.
    if killed_after >= 2:
        impatient = DisconnectService(
            repository=stack.app[INTEGRATIONS_KEY],
            vault=stack.app[VAULT_KEY],
            audit=AuditLog(stack.engine),
            revoker=None,
            retry=FAST.retry,
            owner="impatient",
        )
        assert await impatient.run(c.id) is None

    async with aiohttp.ClientSession() as http:
        receipt = await resuming_service(stack, http).run(c.id)

    assert receipt is not None
    public = receipt.to_public()
    assert public["revoked_at_google"] is True and public["tokens_destroyed"] is True
    # Identical to an uninterrupted run: revoked once, key gone, receipt written, one entry.
    assert revoke_calls(stack) == 1 and revoke_calls(stack, status=200) == 1
    assert [g.revoked_by for g in stack.google.revoked_grants(ALICE)] == ["revoke_endpoint"]
    await assert_destroyed(stack, c)
    entries = await assert_audit_clean(stack, c)
    assert [e.action for e in entries].count("disconnect") == 1
    status, _, stored = await delete(stack, c.id)
    assert status == 200 and stored == public


async def test_delete_of_a_killed_disconnect_finishes_it_once_the_lease_expired(
    stack: Stack,
) -> None:
    c = await connected(stack)
    await run_worker(stack, c, 2)
    await expire_leases(stack.engine)  # time passes for the dead process's lease
    status, _, receipt = await delete(stack, c.id)
    assert status == 200 and receipt["revoked_at_google"] is True
    assert revoke_calls(stack) == 1
    await assert_destroyed(stack, c)


async def test_a_restarted_gateway_finishes_a_killed_disconnect(stack: Stack) -> None:
    """The real restart path: the background resumer of a new gateway process picks up the
    job once the dead process's lease expires, without any request."""
    c = await connected(stack)
    await run_worker(stack, c, 3)
    await expire_leases(stack.engine)  # time passes for the dead process's lease
    async with gateway(stack):
        await until(functools.partial(disconnected, stack, c))
    await assert_destroyed(stack, c)
    assert revoke_calls(stack) == 1


# -- nothing left in the SQLite file ---------------------------------------------------------------


def _file_hits(db_file: Path, needles: list[bytes]) -> list[tuple[str, int]]:
    hits = []
    for path in (db_file, db_file.with_name(db_file.name + "-wal")):
        if path.exists():
            data = path.read_bytes()
            hits += [(path.name, i) for i, needle in enumerate(needles) if needle in data]
    return hits


@pytest.mark.parametrize("backend", ["sqlite"])  # a file to scan
async def test_sqlite_file_keeps_no_token_after_disconnect(stack: Stack) -> None:
    db_file = sqlite_path(stack.settings.database_url)
    assert db_file is not None
    c = await connected(stack)
    # The scan does find what is there: before the disconnect, the blobs and the wrapped key.
    before = await asyncio.to_thread(_file_hits, db_file, c.secrets())
    assert {i for _, i in before} >= {2, 3, 4}

    status, _, _ = await delete(stack, c.id)

    assert status == 200
    assert await asyncio.to_thread(_file_hits, db_file, c.secrets()) == []


# -- a key provider outage -----------------------------------------------------------------------


async def test_a_key_provider_outage_delays_the_revocation_instead_of_skipping_it(
    stack: Stack,
) -> None:
    c = await connected(stack)
    provider = cut_off(stack.app[VAULT_KEY])
    status, headers, body = await delete(stack, c.id)
    # The token cannot be opened to revoke it: destroying it now would leave the grant alive.
    assert status == 202 and "Retry-After" in headers
    assert body["status"] == "disconnecting"
    assert revoke_calls(stack) == 0
    assert (await integration_row(stack.engine, c.id))["refresh_token"] is not None

    provider.down = False
    status, _, receipt = await delete(stack, c.id)
    assert status == 200 and receipt["revoked_at_google"] is True
    assert stack.google.revoked_grants(ALICE) != []
    await assert_destroyed(stack, c)


async def test_a_key_provider_outage_past_the_patience_still_destroys_the_tokens(
    stack: Stack,
) -> None:
    c = await connected(stack)
    cut_off(stack.app[VAULT_KEY])
    impatient = DisconnectService(
        repository=stack.app[INTEGRATIONS_KEY],
        vault=stack.app[VAULT_KEY],
        audit=AuditLog(stack.engine),
        revoker=stack.app[GOOGLE_OAUTH_KEY],
        retry=FAST.retry,
        owner="test:1:outage",
        key_outage_patience=timedelta(0),
    )
    outcome = await impatient.disconnect("acme", c.id)
    assert outcome is not None and outcome.receipt is not None
    receipt = outcome.to_public()
    assert receipt["revoked_at_google"] is False and receipt["tokens_destroyed"] is True
    assert revoke_calls(stack) == 0
    await assert_destroyed(stack, c)
    entries = await AuditLog(stack.engine).entries(integration_id=c.id)
    assert entries[-1].detail["revocation"] == "key_provider_unavailable"
