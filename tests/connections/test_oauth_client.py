"""The Google OAuth client against the emulator over real HTTP: each answer Google can give to a
refresh or a revocation becomes the right value or error, and no secret leaks into any of them.
Also the RetryPolicy it is used with."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from emulator.app import create_emulator_app
from emulator.state import EmulatorState
from gateway.errors import ConfigurationError
from gateway.google.errors import (
    GoogleError,
    InvalidGrant,
    OAuthClientMisconfigured,
    TransientGoogleError,
)
from gateway.google.oauth_client import GoogleOAuthClient
from gateway.google.retry import RetryPolicy
from gateway.settings import load_settings
from tests.support.stack import (
    ALICE,
    ALICE_SUB,
    GATEWAY_CLIENT_ID,
    GATEWAY_CLIENT_SECRET,
    EmulatorSecrets,
)

CALENDAR_LIST = "/calendar/v3/users/me/calendarList"


@dataclass
class Google:
    state: EmulatorState
    url: str
    http: aiohttp.ClientSession

    def client(
        self,
        *,
        secret: str = GATEWAY_CLIENT_SECRET,
        timeout_s: float = 5.0,
        client_id: str = GATEWAY_CLIENT_ID,
        url: str | None = None,
    ) -> GoogleOAuthClient:
        base = url or self.url
        return GoogleOAuthClient(
            self.http,
            token_uri=f"{base}/token",
            revoke_uri=f"{base}/revoke",
            client_id=client_id,
            client_secret=secret,
            timeout_s=timeout_s,
        )

    async def works(self, access_token: str) -> bool:
        """Whether the Calendar API accepts the access token."""
        headers = {"Authorization": f"Bearer {access_token}"}
        async with self.http.get(self.url + CALENDAR_LIST, headers=headers) as response:
            return response.status == 200


@pytest.fixture
async def google(emulator_secrets: EmulatorSecrets) -> AsyncIterator[Google]:
    state = EmulatorState(clock=time.time)
    state.add_user(ALICE_SUB, ALICE)
    state.add_client(GATEWAY_CLIENT_ID, GATEWAY_CLIENT_SECRET, ["http://127.0.0.1/cb"])
    emulator_secrets.watch(state)  # its secrets join the end-of-run log check
    server = TestServer(create_emulator_app(state), host="127.0.0.1", port=0)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            yield Google(state, str(server.make_url("/")).rstrip("/"), http)
    finally:
        await server.close()


def assert_nothing_secret(text: str, *secrets: str | None) -> None:
    for secret in (GATEWAY_CLIENT_SECRET, *secrets):
        if secret:
            assert secret not in text


async def test_refresh_gives_a_working_access_token(google: Google) -> None:
    issued = google.state.issue_tokens(ALICE)
    assert issued.refresh_token is not None
    grant = await google.client().refresh(issued.refresh_token)
    assert grant.access_token != issued.token
    assert await google.works(grant.access_token)
    assert grant.expires_in_s == google.state.access_token_lifetime_s
    assert grant.refresh_token is None and not grant.rotated
    assert grant.scopes == frozenset({"https://www.googleapis.com/auth/calendar"})
    assert_nothing_secret(repr(grant), grant.access_token, issued.refresh_token)
    # The refresh token and the client secret travelled in the body, never in the URL.
    (call,) = google.state.inspector.requests(endpoint="token")
    assert call.query == {} and call.grant_type == "refresh_token"


async def test_a_rotated_refresh_token_comes_back_and_the_old_one_dies(google: Google) -> None:
    issued = google.state.issue_tokens(ALICE)
    assert issued.refresh_token is not None
    google.state.rotate_refresh_token_next(ALICE)
    grant = await google.client().refresh(issued.refresh_token)
    assert grant.rotated and grant.refresh_token != issued.refresh_token
    assert grant.refresh_token is not None
    assert_nothing_secret(repr(grant), grant.refresh_token)
    with pytest.raises(InvalidGrant):
        await google.client().refresh(issued.refresh_token)
    assert await google.works((await google.client().refresh(grant.refresh_token)).access_token)


async def test_a_revoked_grant_is_invalid_grant(google: Google) -> None:
    issued = google.state.issue_tokens(ALICE)
    assert issued.refresh_token is not None
    google.state.revoke_user_access(ALICE)
    with pytest.raises(InvalidGrant) as caught:
        await google.client().refresh(issued.refresh_token)
    assert caught.value.reason == "invalid_grant" and caught.value.google_status == 400
    assert "expired or revoked" in caught.value.message
    assert_nothing_secret(str(caught.value) + repr(caught.value), issued.refresh_token)


@pytest.mark.parametrize(
    ("secret", "client_id"),
    [("wrong-secret", GATEWAY_CLIENT_ID), (GATEWAY_CLIENT_SECRET, "unknown.apps.example")],
)
async def test_a_wrong_client_is_misconfigured_not_a_dead_grant(
    google: Google, secret: str, client_id: str
) -> None:
    issued = google.state.issue_tokens(ALICE)
    assert issued.refresh_token is not None
    with pytest.raises(OAuthClientMisconfigured) as caught:
        await google.client(secret=secret, client_id=client_id).refresh(issued.refresh_token)
    assert caught.value.google_error == "invalid_client" and caught.value.google_status == 401
    assert not isinstance(caught.value, InvalidGrant)
    assert_nothing_secret(str(caught.value) + repr(caught.value), issued.refresh_token, secret)
    # The grant itself is fine: the right client still refreshes it.
    assert await google.works((await google.client().refresh(issued.refresh_token)).access_token)


@pytest.mark.parametrize("status", [500, 503, 429, 403])
async def test_google_failures_are_transient(google: Google, status: int) -> None:
    issued = google.state.issue_tokens(ALICE)
    assert issued.refresh_token is not None
    google.state.inject_fault(status=status, endpoint="token")
    with pytest.raises(TransientGoogleError) as caught:
        await google.client().refresh(issued.refresh_token)
    assert caught.value.google_status == status
    assert not isinstance(caught.value, InvalidGrant)
    assert_nothing_secret(str(caught.value) + repr(caught.value), issued.refresh_token)
    # One attempt only: retrying is the caller's policy.
    assert google.state.inspector.token_calls_for(ALICE_SUB, "refresh_token") == 1


async def test_a_slow_google_times_out_as_transient(google: Google) -> None:
    issued = google.state.issue_tokens(ALICE)
    assert issued.refresh_token is not None
    # Google answers after an hour: the call can only end (and this test finish) through the
    # client's own 0.2 s timeout. No wall-clock bound needed.
    google.state.inject_fault(delay_s=3600, endpoint="token")
    with pytest.raises(TransientGoogleError, match="timed out"):
        await google.client(timeout_s=0.2).refresh(issued.refresh_token)


async def test_an_unreachable_google_is_transient(google: Google) -> None:
    # A port bound but not listening refuses connections, and stays ours for the test (a port
    # merely found free could be taken meanwhile, e.g. by another xdist worker).
    with socket.socket() as nobody:
        nobody.bind(("127.0.0.1", 0))
        client = google.client(url=f"http://127.0.0.1:{nobody.getsockname()[1]}")
        with pytest.raises(TransientGoogleError, match="unreachable"):
            await client.refresh("1//some-refresh-token")
        with pytest.raises(TransientGoogleError):
            await client.revoke("1//some-refresh-token")


async def test_revoke_kills_the_grant_and_a_second_revoke_counts_as_done(google: Google) -> None:
    issued = google.state.issue_tokens(ALICE)
    assert issued.refresh_token is not None
    client = google.client()
    assert await client.revoke(issued.refresh_token) is True
    assert not await google.works(issued.token)
    with pytest.raises(InvalidGrant):
        await client.refresh(issued.refresh_token)
    assert await client.revoke(issued.refresh_token) is False
    (first, _second) = google.state.inspector.requests(endpoint="revoke")
    assert first.query == {}


async def test_revoke_during_an_outage_is_transient(google: Google) -> None:
    issued = google.state.issue_tokens(ALICE)
    assert issued.refresh_token is not None
    google.state.inject_fault(status=503, endpoint="revoke")
    with pytest.raises(TransientGoogleError) as caught:
        await google.client().revoke(issued.refresh_token)
    assert_nothing_secret(str(caught.value), issued.refresh_token)
    assert await google.works(issued.token)  # not revoked


def test_client_from_settings_needs_id_and_secret() -> None:
    with pytest.raises(ConfigurationError, match="GOOGLE_CLIENT_ID"):
        GoogleOAuthClient.from_settings(None, load_settings(env_file=None))  # type: ignore[arg-type]


async def test_client_repr_has_no_secret(google: Google) -> None:
    settings = load_settings(
        env_file=None,
        google_client_id=GATEWAY_CLIENT_ID,
        google_client_secret=GATEWAY_CLIENT_SECRET,
        google_token_uri=f"{google.url}/token",
    )
    client = GoogleOAuthClient.from_settings(google.http, settings)
    assert client.token_uri == f"{google.url}/token"
    assert_nothing_secret(repr(client))


# -- RetryPolicy ----------------------------------------------------------------------------


class Sleeps:
    """An instant sleep that remembers what was asked."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay_s: float) -> None:
        self.delays.append(delay_s)


async def test_retry_policy_retries_transient_refreshes_until_success(google: Google) -> None:
    issued = google.state.issue_tokens(ALICE)
    assert issued.refresh_token is not None
    refresh_token = issued.refresh_token
    google.state.inject_fault(status=503, endpoint="token", times=2)
    sleeps = Sleeps()
    policy = RetryPolicy(attempts=4, base_s=1.0, max_s=8.0, budget_s=60.0)
    grant = await policy.run(
        lambda: google.client().refresh(refresh_token), sleep=sleeps, rng=lambda: 1.0
    )
    assert await google.works(grant.access_token)
    assert sleeps.delays == [1.0, 2.0]  # exponential, full jitter at its top (rng = 1.0)
    assert google.state.inspector.token_calls_for(ALICE_SUB, "refresh_token") == 3


async def test_retry_policy_never_retries_a_dead_grant(google: Google) -> None:
    issued = google.state.issue_tokens(ALICE)
    assert issued.refresh_token is not None
    refresh_token = issued.refresh_token
    google.state.revoke_user_access(ALICE)
    sleeps = Sleeps()
    with pytest.raises(InvalidGrant):
        await RetryPolicy().run(lambda: google.client().refresh(refresh_token), sleep=sleeps)
    assert sleeps.delays == []
    assert google.state.inspector.token_calls_for(ALICE_SUB, "refresh_token") == 1


async def test_retry_policy_stops_at_attempts_budget_and_honours_retry_after() -> None:
    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        raise TransientGoogleError("Google token endpoint answered 503", retry_after_s=3.0)

    sleeps = Sleeps()
    policy = RetryPolicy(attempts=3, base_s=0.1, max_s=1.0, budget_s=100.0)
    with pytest.raises(TransientGoogleError):
        await policy.run(failing, sleep=sleeps, rng=lambda: 0.5)
    assert calls == 3 and sleeps.delays == [3.0, 3.0]  # Retry-After beats the jitter

    calls, sleeps = 0, Sleeps()
    tight = RetryPolicy(attempts=10, base_s=0.1, max_s=1.0, budget_s=5.0)
    with pytest.raises(TransientGoogleError):
        await tight.run(failing, sleep=sleeps, rng=lambda: 0.5, clock=lambda: sum(sleeps.delays))
    # 3 + 3 would end past the 5 s budget: one wait, two calls.
    assert calls == 2 and sleeps.delays == [3.0]


def test_retry_backoff_is_truncated_and_jittered() -> None:
    policy = RetryPolicy(base_s=0.5, max_s=4.0)
    assert [policy.backoff_s(n, lambda: 1.0, None) for n in range(6)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        4.0,
        4.0,
    ]
    assert policy.backoff_s(3, lambda: 0.25, None) == 1.0
    assert policy.backoff_s(0, lambda: 0.0, None) == 0.0
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)


def test_google_errors_are_one_tree() -> None:
    for error in (InvalidGrant(), OAuthClientMisconfigured("x"), TransientGoogleError("x")):
        assert isinstance(error, GoogleError)
