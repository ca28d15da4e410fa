"""The emulator served for tests (tests/emulator, tests/google): its scripted client, users and
clock, and the fixtures that start it (each area's conftest.py takes them by name).

`emulator` is a real in-process emulator served over HTTP on 127.0.0.1 (random port) with:
- one OAuth client (`TEST_CLIENT_ID` / `TEST_CLIENT_SECRET`, redirect `TEST_REDIRECT_URI`),
- scripted users ALICE (consents), BOB (refuses), CAROL (grants only calendar.readonly),
- a frozen clock at `START_EPOCH_S` that only moves when a test calls `state.advance_clock()`
  (override the `emulator_time_source` fixture in a module to use real time).

Typical use:

    async def test_x(emulator: RunningEmulator, http: aiohttp.ClientSession) -> None:
        token = emulator.token_for(ALICE)            # valid access token, calendar scope
        r = await http.get(emulator.url("/calendar/v3/users/me/calendarList"),
                           headers={"Authorization": f"Bearer {token}"})
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from emulator.app import create_emulator_app
from emulator.state import EmulatorState, IssuedTokens, OAuthClient
from tests.support.stack import EmulatorSecrets

TEST_CLIENT_ID = "emulator-test-client.apps.googleusercontent.com"
TEST_CLIENT_SECRET = "emu-test-secret"
TEST_REDIRECT_URI = "http://127.0.0.1:8080/oauth/google/callback"
# Monday 2026-11-23 09:00 UTC: a fixed "now" so expiry and calendar windows are reproducible.
START_EPOCH_S = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC).timestamp()

CALENDAR = "https://www.googleapis.com/auth/calendar"
CALENDAR_READONLY = "https://www.googleapis.com/auth/calendar.readonly"
CALENDAR_EVENTS = "https://www.googleapis.com/auth/calendar.events"
USERINFO_EMAIL = "https://www.googleapis.com/auth/userinfo.email"


@dataclass(frozen=True)
class ScriptedUser:
    sub: str
    email: str


ALICE = ScriptedUser("100000000000000000001", "alice@example.com")  # consent: grant
BOB = ScriptedUser("100000000000000000002", "bob@example.com")  # consent: deny
CAROL = ScriptedUser("100000000000000000003", "carol@example.com")  # partial: calendar.readonly


class FrozenTime:
    """A time source that stands still; the state's clock offset moves it."""

    def __init__(self, epoch_s: float) -> None:
        self.epoch_s = epoch_s

    def __call__(self) -> float:
        return self.epoch_s


@dataclass
class RunningEmulator:
    """An emulator served over real HTTP, plus shortcuts into its state."""

    base_url: str  # no trailing slash
    state: EmulatorState
    app: web.Application
    client: OAuthClient

    def url(self, path: str) -> str:
        return self.base_url + path

    def issue(
        self,
        user: ScriptedUser | str,
        scopes: Iterable[str] = (CALENDAR,),
        *,
        offline: bool = True,
    ) -> IssuedTokens:
        """Tokens as if `user` consented to `scopes` for the test client (no HTTP)."""
        ref = user.sub if isinstance(user, ScriptedUser) else user
        return self.state.issue_tokens(ref, self.client.client_id, scopes, offline=offline)

    def token_for(self, user: ScriptedUser | str, scopes: Iterable[str] = (CALENDAR,)) -> str:
        """A valid access token of `user` (sub or email) for `scopes`."""
        return self.issue(user, scopes).token


@pytest.fixture
def emulator_time_source() -> Callable[[], float]:
    """Where the emulator's clock reads time from; override with `time.time` for real time."""
    return FrozenTime(START_EPOCH_S)


@pytest.fixture
def emulator_state(
    emulator_time_source: Callable[[], float], emulator_secrets: EmulatorSecrets
) -> EmulatorState:
    """A fresh state with the test client and the scripted users."""
    state = EmulatorState(clock=emulator_time_source)
    state.add_client(TEST_CLIENT_ID, TEST_CLIENT_SECRET, [TEST_REDIRECT_URI])
    state.add_user(ALICE.sub, ALICE.email, time_zone="Europe/Berlin", name="Alice Example")
    state.add_user(BOB.sub, BOB.email, consent="deny", time_zone="America/New_York")
    state.add_user(CAROL.sub, CAROL.email, consent="partial", partial_scopes=[CALENDAR_READONLY])
    state.default_user_sub = ALICE.sub
    emulator_secrets.watch(state)
    return state


@pytest.fixture
async def emulator(emulator_state: EmulatorState) -> AsyncIterator[RunningEmulator]:
    """The emulator on 127.0.0.1 with a random port, stopped after the test."""
    app = create_emulator_app(emulator_state)
    server = TestServer(app, host="127.0.0.1", port=0)
    # No access log: the emulator plays Google, and Google's logs are not the gateway's (some
    # requests legitimately carry tokens in the query, e.g. /revoke?token=...).
    await server.start_server(access_log=None)
    try:
        base = str(server.make_url("/")).rstrip("/")
        yield RunningEmulator(base, emulator_state, app, emulator_state.clients[TEST_CLIENT_ID])
    finally:
        await server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain client session (pass `allow_redirects=False` to read a 302 yourself)."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def token_for(emulator: RunningEmulator) -> Callable[..., str]:
    """`token_for(ALICE)` or `token_for("bob@example.com", scopes=[...])` -> access token."""
    return emulator.token_for
