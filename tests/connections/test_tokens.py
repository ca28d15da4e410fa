"""TokenManager on both backends, against the emulator over real HTTP: tokens are served from
storage while fresh, refreshed ahead of expiry (once, however many callers), rotated refresh
tokens replace the stored one, a dead grant puts the integration in needs_reauth for good, and
Google outages are retried, never mistaken for revocation. Every test also checks that no token
or secret reached a log line."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from emulator.app import create_emulator_app
from emulator.state import EmulatorState
from gateway.audit import AuditLog
from gateway.connections.disconnect import DisconnectHooks, DisconnectService
from gateway.connections.errors import IntegrationInactive
from gateway.connections.model import (
    PURPOSE_ACCESS_TOKEN,
    PURPOSE_REFRESH_TOKEN,
    Integration,
    Status,
)
from gateway.connections.tokens import TokenManager
from gateway.errors import NotFound
from gateway.google.calendar import TokenSource
from gateway.google.errors import OAuthClientMisconfigured, TransientGoogleError
from gateway.google.oauth_client import TokenGrant
from gateway.google.retry import RetryPolicy
from gateway.http.appkeys import TOKENS_KEY
from tests.connections.refresh_worker import Services, open_services, seed_integration, stored_token
from tests.support.processes import until
from tests.support.stack import (
    ALICE,
    ALICE_SUB,
    GATEWAY_CLIENT_ID,
    GATEWAY_CLIENT_SECRET,
    EmulatorSecrets,
    LogCapture,
    Stack,
    assert_no_secret_logged,
    issued_secrets,
)

CALENDAR_LIST = "/calendar/v3/users/me/calendarList"
INTEGRATION_ID = "int_00000000000000000000000a"
MARGIN_S = 300
LIFETIME_S = 3599


class Sleeps:
    """An instant sleep that remembers what the backoff asked for."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay_s: float) -> None:
        self.delays.append(delay_s)
        await asyncio.sleep(0)


@dataclass
class Env:
    google: EmulatorState
    url: str
    http: aiohttp.ClientSession
    services: Services
    sleeps: Sleeps
    reauthed: list[Integration] = field(default_factory=list)

    @property
    def tokens(self) -> TokenManager:
        return self.services.tokens

    def now(self) -> datetime:
        """The emulator's time: the manager's clock, so advance_clock moves both."""
        return datetime.fromtimestamp(self.google.clock(), UTC)

    def refresh_calls(self) -> int:
        return self.google.inspector.token_calls_for(ALICE_SUB, "refresh_token")

    async def seed(self, *, expires_in_s: float = LIFETIME_S) -> tuple[str, str]:
        """Alice connected; her stored access token expires in `expires_in_s`. Returns the
        (access, refresh) tokens Google issued."""
        issued = self.google.issue_tokens(ALICE)
        assert issued.refresh_token is not None
        await seed_integration(
            self.services.repo,
            self.services.vault,
            integration_id=INTEGRATION_ID,
            refresh_token=issued.refresh_token,
            access_token=issued.token,
            access_token_expires_at=self.now() + timedelta(seconds=expires_in_s),
            google_sub=ALICE_SUB,
            now=self.now(),
        )
        return issued.token, issued.refresh_token

    async def stored(self, purpose: str) -> str | None:
        return await stored_token(self.services.repo, self.services.vault, INTEGRATION_ID, purpose)

    async def integration(self) -> Integration:
        found = await self.services.repo.get_by_id(INTEGRATION_ID)
        assert found is not None
        return found

    async def works(self, access_token: str) -> bool:
        """Whether Google's Calendar API accepts the token (what the agent's call will see)."""
        headers = {"Authorization": f"Bearer {access_token}"}
        async with self.http.get(self.url + CALENDAR_LIST, headers=headers) as response:
            return response.status == 200


@pytest.fixture
async def env(
    engine: AsyncEngine, database_url: str, tmp_path: Path, emulator_secrets: EmulatorSecrets
) -> AsyncIterator[Env]:
    google = EmulatorState(clock=time.time)
    google.add_user(ALICE_SUB, ALICE)
    google.add_client(GATEWAY_CLIENT_ID, GATEWAY_CLIENT_SECRET, ["http://127.0.0.1/cb"])
    emulator_secrets.watch(google)  # its secrets join the end-of-run log check
    server = TestServer(create_emulator_app(google), host="127.0.0.1", port=0)
    await server.start_server()
    url = str(server.make_url("/")).rstrip("/")
    capture = LogCapture()
    # Records of every logger reach the root's handlers; ours log at DEBUG for the test.
    root, ours = logging.getLogger(), [logging.getLogger(n) for n in ("gateway", "vault")]
    previous = [logger.level for logger in ours]
    root.addHandler(capture)
    for logger in ours:
        logger.setLevel(logging.DEBUG)
    sleeps = Sleeps()
    reauthed: list[Integration] = []

    async def hook(integration: Integration) -> None:
        reauthed.append(integration)

    try:
        async with (
            aiohttp.ClientSession() as http,
            open_services(
                database_url,
                tmp_path / "keyring.json",
                url,
                GATEWAY_CLIENT_ID,
                GATEWAY_CLIENT_SECRET,
                clock=lambda: datetime.fromtimestamp(google.clock(), UTC),
                margin_s=MARGIN_S,
                retry=RetryPolicy(attempts=3, base_s=0.5, max_s=2.0, budget_s=30.0),
                sleep=sleeps,
                reauth_hooks=[hook],
            ) as services,
        ):
            yield Env(google, url, http, services, sleeps, reauthed)
    finally:
        root.removeHandler(capture)
        for logger, level in zip(ours, previous, strict=True):
            logger.setLevel(level)
        await server.close()
    assert_no_secret_logged(capture.lines, issued_secrets(google))


async def test_a_fresh_token_is_served_without_calling_google(env: Env) -> None:
    access, _ = await env.seed()
    tokens = await asyncio.gather(*(env.tokens.access_token(INTEGRATION_ID) for _ in range(20)))
    assert set(tokens) == {access}
    assert env.refresh_calls() == 0


async def test_the_token_is_refreshed_ahead_of_expiry_not_at_the_last_second(env: Env) -> None:
    access, _ = await env.seed()
    env.google.advance_clock(LIFETIME_S - MARGIN_S - 60)  # a minute before the margin
    assert await env.tokens.access_token(INTEGRATION_ID) == access
    assert env.refresh_calls() == 0

    env.google.advance_clock(120)  # inside the margin, the old token still valid
    assert await env.works(access)
    new = await env.tokens.access_token(INTEGRATION_ID)
    assert new != access and await env.works(new)
    assert env.refresh_calls() == 1
    assert await env.stored(PURPOSE_ACCESS_TOKEN) == new
    integration = await env.integration()
    assert integration.status is Status.ACTIVE
    assert integration.last_refresh_at is not None
    assert integration.access_token_expires_at is not None
    assert abs(
        integration.access_token_expires_at - (env.now() + timedelta(seconds=LIFETIME_S))
    ) < (timedelta(seconds=2))
    # The new token is now served from storage.
    assert await env.tokens.access_token(INTEGRATION_ID) == new
    assert env.refresh_calls() == 1


async def test_a_rotated_refresh_token_replaces_the_stored_one(env: Env) -> None:
    _, first_refresh = await env.seed(expires_in_s=-1)
    env.google.rotate_refresh_token_next(ALICE)
    assert await env.works(await env.tokens.access_token(INTEGRATION_ID))
    second_refresh = await env.stored(PURPOSE_REFRESH_TOKEN)
    assert second_refresh is not None and second_refresh != first_refresh
    (grant,) = env.google.active_grants(ALICE_SUB, GATEWAY_CLIENT_ID)
    assert grant.refresh_token == second_refresh
    assert first_refresh in grant.retired_refresh_tokens

    # The next refresh uses the new refresh token (the old one would be invalid_grant).
    env.google.advance_clock(LIFETIME_S)
    assert await env.works(await env.tokens.access_token(INTEGRATION_ID))
    assert (await env.integration()).status is Status.ACTIVE
    entries = await env.services.audit.entries(integration_id=INTEGRATION_ID)
    assert [(e.action, e.outcome) for e in entries] == [("refresh", "rotated")]


async def test_invalid_grant_means_needs_reauth_audit_hook_and_no_more_google(env: Env) -> None:
    await env.seed(expires_in_s=-1)
    env.google.revoke_user_access(ALICE)  # the user removed our access in their Google account
    with pytest.raises(IntegrationInactive) as caught:
        await env.tokens.access_token(INTEGRATION_ID, request_id="req-42")
    assert caught.value.status == 409 and caught.value.code == "integration_inactive"
    assert caught.value.extra == {
        "status": "needs_reauth",
        "integration_status": "needs_reauth",
        "reauth_reason": "invalid_grant",
    }

    integration = await env.integration()
    assert integration.status is Status.NEEDS_REAUTH
    assert integration.reauth_reason == "invalid_grant"
    assert integration.to_public()["reauth_reason"] == "invalid_grant"
    found = await env.services.repo.read_for_refresh(INTEGRATION_ID)
    assert found is not None and found[1].access_token is None

    (entry,) = await env.services.audit.entries(integration_id=INTEGRATION_ID)
    assert (entry.action, entry.outcome) == ("refresh", "invalid_grant")
    assert (entry.tenant_id, entry.request_id) == ("acme", "req-42")
    assert entry.detail == {"status": "needs_reauth"}
    assert ALICE not in repr(entry)

    assert [i.id for i in env.reauthed] == [INTEGRATION_ID]
    assert env.reauthed[0].status is Status.NEEDS_REAUTH

    calls = env.refresh_calls()
    assert calls == 1
    for _ in range(3):
        with pytest.raises(IntegrationInactive):
            await env.tokens.access_token(INTEGRATION_ID)
        with pytest.raises(IntegrationInactive):
            await env.tokens.force_refresh(INTEGRATION_ID)
    assert env.refresh_calls() == calls  # never called Google again
    assert len(env.reauthed) == 1


async def test_concurrent_callers_of_a_dead_grant_cause_one_google_call(env: Env) -> None:
    await env.seed(expires_in_s=-1)
    env.google.revoke_user_access(ALICE)
    results = await asyncio.gather(
        *(env.tokens.access_token(INTEGRATION_ID) for _ in range(50)), return_exceptions=True
    )
    assert all(isinstance(r, IntegrationInactive) for r in results)
    assert env.refresh_calls() == 1
    assert len(env.reauthed) == 1
    assert len(await env.services.audit.entries(integration_id=INTEGRATION_ID)) == 1


async def test_two_outages_then_success_is_one_refresh_and_still_active(env: Env) -> None:
    await env.seed(expires_in_s=-1)
    env.google.inject_fault(status=503, endpoint="token", times=2)
    token = await env.tokens.access_token(INTEGRATION_ID)
    assert await env.works(token)
    assert env.refresh_calls() == 3
    assert len(env.sleeps.delays) == 2 and all(0 <= d <= 1.0 for d in env.sleeps.delays)
    assert (await env.integration()).status is Status.ACTIVE
    assert await env.services.audit.entries(integration_id=INTEGRATION_ID) == []


@pytest.mark.parametrize("status", [503, 429])
async def test_an_outage_beyond_the_budget_is_transient_never_reauth(env: Env, status: int) -> None:
    await env.seed(expires_in_s=-1)
    env.google.inject_fault(status=status, endpoint="token", times=100)
    with pytest.raises(TransientGoogleError) as caught:
        await env.tokens.access_token(INTEGRATION_ID, request_id="req-7")
    assert caught.value.google_status == status
    assert env.refresh_calls() == 3  # the policy's attempts
    integration = await env.integration()
    assert integration.status is Status.ACTIVE and integration.reauth_reason is None
    assert env.reauthed == []
    (entry,) = await env.services.audit.entries(integration_id=INTEGRATION_ID)
    assert (entry.action, entry.outcome, entry.request_id) == (
        "refresh",
        "google_unavailable",
        "req-7",
    )
    assert entry.detail["google_status"] == status

    # Google is back: once the failure cooldown has passed, the next call refreshes.
    env.google.faults.clear()
    env.google.advance_clock(10)
    assert await env.works(await env.tokens.access_token(INTEGRATION_ID))


async def test_callers_queued_behind_a_failed_refresh_share_its_failure(env: Env) -> None:
    await env.seed(expires_in_s=-1)
    env.google.inject_fault(status=503, endpoint="token", times=100)
    results = await asyncio.gather(
        *(env.tokens.access_token(INTEGRATION_ID) for _ in range(30)), return_exceptions=True
    )
    assert all(isinstance(r, TransientGoogleError) for r in results)
    assert env.refresh_calls() == 3  # one retry budget, not thirty
    assert len(await env.services.audit.entries(integration_id=INTEGRATION_ID)) == 1
    # Callers arriving within the cooldown fail fast too; after it, Google is tried again.
    with pytest.raises(TransientGoogleError):
        await env.tokens.access_token(INTEGRATION_ID)
    assert env.refresh_calls() == 3
    env.google.faults.clear()
    env.google.advance_clock(10)
    assert await env.works(await env.tokens.access_token(INTEGRATION_ID))


async def test_during_an_outage_a_still_valid_token_keeps_being_served(env: Env) -> None:
    access, _ = await env.seed(expires_in_s=MARGIN_S - 60)  # inside the margin, still valid
    env.google.inject_fault(status=503, endpoint="token", times=100)
    assert await env.tokens.access_token(INTEGRATION_ID) == access
    assert await env.works(access)
    (entry,) = await env.services.audit.entries(integration_id=INTEGRATION_ID)
    assert entry.outcome == "google_unavailable"
    assert (await env.integration()).status is Status.ACTIVE


async def test_a_misconfigured_client_is_not_the_users_fault(env: Env, tmp_path: Path) -> None:
    await env.seed(expires_in_s=-1)
    env.google.add_client(GATEWAY_CLIENT_ID, "rotated-secret", ["http://127.0.0.1/cb"])
    with pytest.raises(OAuthClientMisconfigured):
        await env.tokens.access_token(INTEGRATION_ID)
    assert (await env.integration()).status is Status.ACTIVE
    (entry,) = await env.services.audit.entries(integration_id=INTEGRATION_ID)
    assert entry.outcome == "oauth_client_misconfigured"


async def test_a_hundred_concurrent_callers_cause_one_refresh(env: Env) -> None:
    old, _ = await env.seed(expires_in_s=-1)
    tokens = await asyncio.gather(*(env.tokens.access_token(INTEGRATION_ID) for _ in range(100)))
    assert env.refresh_calls() == 1
    (new,) = set(tokens)
    assert new != old and await env.works(new)
    assert await env.stored(PURPOSE_ACCESS_TOKEN) == new
    assert "refreshing=0" in repr(env.tokens)  # no per-integration lock left behind


async def test_force_refresh_after_a_401_refreshes_once_for_all_holders(env: Env) -> None:
    old, _ = await env.seed()
    # Google killed the access token early (e.g. a password change); five requests saw a 401.
    env.google.access_tokens.pop(old)
    assert not await env.works(old)
    tokens = await asyncio.gather(
        *(env.tokens.force_refresh(INTEGRATION_ID, stale_access_token=old) for _ in range(5))
    )
    (new,) = set(tokens)
    assert new != old and await env.works(new)
    assert env.refresh_calls() == 1
    # A late caller with the same stale token gets the replacement without a Google call.
    assert await env.tokens.force_refresh(INTEGRATION_ID, stale_access_token=old) == new
    assert env.refresh_calls() == 1


async def test_unknown_and_inactive_integrations(env: Env) -> None:
    with pytest.raises(NotFound):
        await env.tokens.access_token("int_ffffffffffffffffffffffff")
    await env.seed()
    assert await env.services.repo.set_status(INTEGRATION_ID, Status.DISCONNECTING)
    with pytest.raises(IntegrationInactive) as caught:
        await env.tokens.access_token(INTEGRATION_ID)
    assert caught.value.extra == {"status": "disconnecting", "integration_status": "disconnecting"}
    assert env.refresh_calls() == 0


async def test_a_prepared_source_serves_its_first_token_from_the_row_read_with_it(
    env: Env,
) -> None:
    """What a sync asks before calling Google: the integration and a token source, from one
    read. Its first token is the stored one (no read, no refresh); an expired one is
    refreshed; the row it was read with decides, and later tokens are read again."""
    assert await env.tokens.prepared("int_ffffffffffffffffffffffff") is None
    access, _ = await env.seed()
    prepared = await env.tokens.prepared(INTEGRATION_ID)
    assert prepared is not None
    integration, source = prepared
    assert integration.id == INTEGRATION_ID and integration.usable
    assert INTEGRATION_ID in repr(source) and access not in repr(source)
    reads = 0
    read = env.services.repo.read_for_refresh

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal reads
        reads += 1
        return await read(*args, **kwargs)

    env.services.repo.read_for_refresh = counted  # type: ignore[method-assign]
    assert await source.access_token() == access
    assert reads == 0 and env.refresh_calls() == 0
    assert await source.access_token() == access  # later tokens: read as usual
    assert reads == 1

    # Prepared just before its token expired: the first token is a refreshed one.
    prepared = await env.tokens.prepared(INTEGRATION_ID)
    assert prepared is not None
    env.google.advance_clock(LIFETIME_S)
    fresh = await prepared[1].access_token()
    assert fresh != access and await env.works(fresh) and env.refresh_calls() == 1

    # Prepared from a row that is no longer usable: no token, no Google call.
    assert await env.services.repo.set_status(INTEGRATION_ID, Status.DISCONNECTING)
    prepared = await env.tokens.prepared(INTEGRATION_ID)
    assert prepared is not None and not prepared[0].usable
    with pytest.raises(IntegrationInactive):
        await prepared[1].access_token()
    assert env.refresh_calls() == 1


async def test_a_caller_cancelled_mid_refresh_does_not_lose_a_rotated_token(env: Env) -> None:
    _, first_refresh = await env.seed(expires_in_s=-1)
    env.google.rotate_refresh_token_next(ALICE)
    slow = env.google.inject_fault(delay_s=1.0, endpoint="token")  # Google is slow to answer
    caller = asyncio.create_task(env.tokens.access_token(INTEGRATION_ID))

    async def at_google() -> bool:
        return slow.applied == 1

    await until(at_google)  # the refresh request is in flight, not merely scheduled
    caller.cancel()  # e.g. the agent's HTTP request was aborted
    with pytest.raises(asyncio.CancelledError):
        await caller

    async def refresh_finished() -> bool:
        return "refreshing=0" in repr(env.tokens)

    await until(refresh_finished)  # on its own, after the caller left
    (grant,) = env.google.active_grants(ALICE_SUB, GATEWAY_CLIENT_ID)
    assert grant.refresh_token != first_refresh
    assert await env.stored(PURPOSE_REFRESH_TOKEN) == grant.refresh_token
    env.google.advance_clock(LIFETIME_S)
    assert await env.works(await env.tokens.access_token(INTEGRATION_ID))
    assert (await env.integration()).status is Status.ACTIVE


# SQLite only: on PostgreSQL the refresh holds the integration's row lock, so the disconnect
# request itself waits for it and nothing queues in the process
# (tests/connections/test_refresh_single_flight.py covers the lock).
@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_disconnect_shares_the_refresh_in_flight_and_revokes_its_grant(
    env: Env, backend: str
) -> None:
    """A sync's refresh of an expired token is at Google when the user disconnects. Stopping
    the watch channels (disconnect step 2) needs a token too: it queues behind that refresh and
    gets its token instead of refreshing again, and the revocation (step 3) revokes the grant
    that refresh left alive (Google rotated the refresh token meanwhile)."""
    await env.seed(expires_in_s=-1)
    env.google.rotate_refresh_token_next(ALICE)
    at_google, release = asyncio.Event(), asyncio.Event()

    class HeldGoogle:
        """Google's token endpoint, answering only once the disconnect is queued."""

        async def refresh(self, refresh_token: str) -> TokenGrant:
            at_google.set()
            await release.wait()
            return await env.services.oauth.refresh(refresh_token)

    tokens = TokenManager(
        repository=env.services.repo,
        vault=env.services.vault,
        oauth=HeldGoogle(),
        audit=env.services.audit,
        clock=env.now,
        margin_s=MARGIN_S,
        # The barrier: Google answers the sync's refresh once another caller waits for it.
        queue_hook=lambda integration_id: release.set(),
    )
    syncing = asyncio.create_task(tokens.access_token(INTEGRATION_ID))
    await at_google.wait()

    handed: list[str] = []

    async def stop_channels(integration: Integration, source: TokenSource) -> int:
        handed.append(await source.access_token())
        return 1

    service = DisconnectService(
        repository=env.services.repo,
        vault=env.services.vault,
        audit=AuditLog(env.services.repo.engine),
        revoker=env.services.oauth,
        retry=RetryPolicy(attempts=2, base_s=0.01, max_s=0.02, budget_s=5.0),
        tokens=tokens,
        owner="test",
        hooks=DisconnectHooks([stop_channels]),
        clock=env.now,
    )
    outcome = await service.disconnect("acme", INTEGRATION_ID)
    synced = await syncing

    assert release.is_set(), "the disconnect did not wait for the refresh in flight"
    assert env.refresh_calls() == 1
    assert handed == [synced]
    assert outcome is not None and outcome.receipt is not None
    assert outcome.receipt.revoked_at_google is True
    # Revoked by our call with the rotated refresh token: the grant that was really alive (the
    # first refresh token would have been answered invalid_token and left the grant alive).
    (revoked,) = env.google.revoked_grants(ALICE)
    assert revoked.revoked_by == "revoke_endpoint"
    assert env.google.active_grants(ALICE_SUB, GATEWAY_CLIENT_ID) == []


async def test_disconnect_step_two_refreshes_through_the_token_manager(env: Env) -> None:
    """With an expired access token and nothing else in flight, the disconnect's own refresh is
    the TokenManager's: one Google call, its token handed to step 2, and a dead grant found
    then does not turn the disconnecting integration into needs_reauth."""
    await env.seed(expires_in_s=-1)
    handed: list[str] = []

    async def stop_channels(integration: Integration, source: TokenSource) -> int:
        handed.append(await source.access_token())
        handed.append(await source.access_token())  # served from storage the second time
        return 1

    service = DisconnectService(
        repository=env.services.repo,
        vault=env.services.vault,
        audit=AuditLog(env.services.repo.engine),
        revoker=env.services.oauth,
        retry=RetryPolicy(attempts=2, base_s=0.01, max_s=0.02, budget_s=5.0),
        tokens=env.tokens,
        owner="test",
        hooks=DisconnectHooks([stop_channels]),
        clock=env.now,
    )
    outcome = await service.disconnect("acme", INTEGRATION_ID)
    assert outcome is not None and outcome.receipt is not None
    assert env.refresh_calls() == 1
    assert len(handed) == 2 and handed[0] == handed[1]
    assert not env.reauthed
    assert outcome.receipt.revoked_at_google is True


async def test_end_to_end_revoked_at_google_then_reconnected(stack: Stack) -> None:
    """Through the running gateway: a connected user's token is served without a Google call;
    after the user removes our access at Google the next refresh shows needs_reauth in the
    API; connecting again makes the integration active and usable."""
    connected = await stack.connect(ALICE)
    integration_id = connected["integration_id"]
    tokens = stack.app[TOKENS_KEY]
    calls = stack.google.inspector.token_calls_for(ALICE_SUB, "refresh_token")
    first = await tokens.access_token(integration_id)
    assert stack.google.inspector.token_calls_for(ALICE_SUB, "refresh_token") == calls

    stack.google.revoke_user_access(ALICE)
    with pytest.raises(IntegrationInactive):
        await tokens.force_refresh(integration_id, stale_access_token=first)
    async with stack.http.get(
        stack.url(f"/v1/integrations/{integration_id}"), headers=stack.auth()
    ) as response:
        body = await response.json()
    assert (body["status"], body["reauth_reason"]) == ("needs_reauth", "invalid_grant")

    again = await stack.connect(ALICE)
    assert again["integration_id"] == integration_id
    # The gateway asks only for free/busy and booking scopes: free/busy is what must work.
    headers = {"Authorization": f"Bearer {await tokens.access_token(integration_id)}"}
    now = datetime.now(UTC)
    query = {
        "timeMin": now.isoformat(),
        "timeMax": (now + timedelta(days=1)).isoformat(),
        "items": [{"id": "primary"}],
    }
    async with stack.http.post(
        stack.google_url + "/calendar/v3/freeBusy", json=query, headers=headers
    ) as response:
        assert response.status == 200, await response.text()
