"""The whole system for end-to-end tests: the Google emulator and the gateway, both served over
real HTTP on 127.0.0.1, the gateway configured to talk to the emulator, with API keys for two
tenants and a scripted browser that follows the OAuth redirect chain.

    async def test_x(stack: Stack) -> None:
        result = await stack.connect("alice@example.com", user_id="u-1")
        assert result["status"] == "connected"
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from emulator.app import create_emulator_app
from emulator.state import EmulatorState
from gateway.apikeys import SCOPES, ApiKeyStore
from gateway.app import create_app
from gateway.http.access_log import PathOnlyAccessLogger
from gateway.http.appkeys import WEBHOOK_RESOLVE_KEY
from gateway.settings import Settings, load_settings

GATEWAY_CLIENT_ID = "calendar-gateway-test.apps.googleusercontent.com"
GATEWAY_CLIENT_SECRET = "emu-gateway-test-secret"
RETURN_URL = "https://app.example.com/calendar/connected"

ALICE_SUB, ALICE = "200000000000000000001", "alice@example.com"  # consents
BOB_SUB, BOB = "200000000000000000002", "bob@example.com"  # refuses
# Unticks the calendar scopes on Google's consent screen (granular consent): only sign-in.
CAROL_SUB, CAROL = "200000000000000000003", "carol@example.com"
# Grants availability but not booking.
DAVE_SUB, DAVE = "200000000000000000004", "dave@example.com"
FREEBUSY_SCOPE = "https://www.googleapis.com/auth/calendar.events.freebusy"


class LogCapture(logging.Handler):
    """Every log record of the gateway during a test, at every level, formatted as a log
    line would be (message, arguments and traceback)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("emulator"):
            return  # the emulator plays Google; its own logs are not ours
        self.lines.append(self.format(record))


class EmulatorSecrets:
    """The emulators a run started, so the end-of-run log check (tests/conftest.py) knows every
    token, code and secret they handed out, including those issued after a test ended (a
    thread's late refresh). Owned by the session fixture `emulator_secrets` and passed to
    whatever starts an emulator."""

    def __init__(self) -> None:
        self._emulators: list[EmulatorState] = []

    def watch(self, google: EmulatorState) -> EmulatorState:
        """Add `google`'s secrets, now and later, to the run's log check."""
        self._emulators.append(google)
        return google

    def all(self) -> set[str]:
        return set().union(*(issued_secrets(google) for google in self._emulators))


def issued_secrets(google: EmulatorState) -> set[str]:
    """Every token, code and secret the emulator handed out (or was configured with)."""
    found = set(google.access_tokens) | set(google.refresh_index) | set(google.auth_codes)
    for grant in google.grants.values():
        found.add(grant.refresh_token)
        found.update(grant.retired_refresh_tokens)
    found.add(GATEWAY_CLIENT_SECRET)
    return {s for s in found if s}


def assert_no_secret_logged(lines: list[str], secrets: set[str]) -> None:
    leaks = [(s[:8] + "...", line[:120]) for line in lines for s in secrets if s in line]
    assert not leaks, f"secrets in log lines: {leaks[:5]}"


async def loopback_only(host: str, _port: int) -> list[str]:
    """A resolver for webhook endpoints in tests: `localhost` is 127.0.0.1, every other name
    is unknown (no test ever sends a DNS query or a delivery off this machine)."""
    if host == "localhost":
        return ["127.0.0.1"]
    raise OSError(f"tests resolve no name but localhost: {host!r}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    google: EmulatorState
    google_url: str
    settings: Settings
    app: web.Application
    base_url: str
    engine: AsyncEngine
    http: aiohttp.ClientSession
    api_key: str = field(repr=False)  # tenant "acme", every scope
    other_tenant_key: str = field(repr=False)  # tenant "globex", every scope

    def url(self, path: str) -> str:
        return self.base_url + path

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.api_key}"}

    async def start_connect(
        self, user_id: str, *, login_hint: str | None = None, key: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"user_id": user_id, "return_url": RETURN_URL}
        if login_hint is not None:
            body["login_hint"] = login_hint
        async with self.http.post(
            self.url("/v1/connect-sessions"), json=body, headers=self.auth(key)
        ) as response:
            assert response.status == 201, await response.text()
            return dict(await response.json())

    async def browser_get(self, url: str) -> str:
        """One browser step: GET without following redirects; returns the Location."""
        async with self.http.get(url, allow_redirects=False) as response:
            assert response.status in (302, 303), (response.status, await response.text())
            return str(response.headers["Location"])

    async def connect(self, email: str, user_id: str = "u-1") -> dict[str, str]:
        """The user's whole browser journey: gateway connect URL -> Google consent -> gateway
        callback -> the return URL. Returns the return URL's query parameters."""
        session = await self.start_connect(user_id, login_hint=email)
        at_callback = await self.browser_get(session["connect_url"])
        back = await self.browser_get(at_callback)
        assert back.startswith(RETURN_URL), back
        return {k: v[0] for k, v in parse_qs(urlsplit(back).query).items()}


async def start_stack(
    engine: AsyncEngine,
    database_url: str,
    tmp_path: Path,
    *,
    emulator_secrets: EmulatorSecrets,
    **overrides: Any,
) -> AsyncIterator[Stack]:
    google = EmulatorState(clock=time.time)
    google.add_user(ALICE_SUB, ALICE, time_zone="Europe/Berlin")
    google.add_user(BOB_SUB, BOB, consent="deny")
    google.add_user(CAROL_SUB, CAROL, consent="partial", partial_scopes=[])
    google.add_user(DAVE_SUB, DAVE, consent="partial", partial_scopes=[FREEBUSY_SCOPE])
    google.calendars.allow_insecure_loopback_webhooks = True
    emulator_secrets.watch(google)
    google_server = TestServer(create_emulator_app(google), host="127.0.0.1", port=0)
    await google_server.start_server(access_log=None)  # Google's log is not ours to check
    google_url = str(google_server.make_url("/")).rstrip("/")

    # The gateway's socket is bound now and kept: its URL goes into its own settings (OAuth
    # callback, webhook address) before the app exists, and a port merely found free and
    # released could be taken meanwhile by another xdist worker or an outgoing connection.
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    port = int(listening.getsockname()[1])
    public_url = f"http://127.0.0.1:{port}"
    google.add_client(
        GATEWAY_CLIENT_ID, GATEWAY_CLIENT_SECRET, [f"{public_url}/oauth/google/callback"]
    )
    # The background sync scheduler would race tests that drive the sync engine themselves;
    # the scheduler's own tests turn it on (sync_worker=True).
    overrides.setdefault("sync_worker", False)
    overrides.setdefault("allowed_return_urls", ["https://app.example.com/"])
    # Likewise the webhook worker; tests that deliver drive a worker or turn it on.
    overrides.setdefault("webhook_worker", False)
    settings = load_settings(
        env_file=None,
        database_url=database_url,
        kek_uri=f"file:{tmp_path / 'keyring.json'}",
        public_url=public_url,
        google_client_id=GATEWAY_CLIENT_ID,
        google_client_secret=GATEWAY_CLIENT_SECRET,
        google_auth_uri=f"{google_url}/o/oauth2/v2/auth",
        google_token_uri=f"{google_url}/token",
        google_revoke_uri=f"{google_url}/revoke",
        google_certs_uri=f"{google_url}/oauth2/v1/certs",
        google_calendar_api_url=f"{google_url}/calendar/v3/",
        **overrides,
    )
    keys = ApiKeyStore(engine)
    api_key = (await keys.create("acme", SCOPES, name="test")).value
    other = (await keys.create("globex", SCOPES, name="other tenant")).value
    app = create_app(settings, engine=engine)
    # Webhook endpoint hosts never go to DNS in tests: only loopback names resolve.
    app[WEBHOOK_RESOLVE_KEY] = loopback_only
    # AppRunner as TestServer would build it, on the socket bound above.
    gateway_runner = web.AppRunner(
        app, access_log_class=PathOnlyAccessLogger, handler_cancellation=True
    )
    capture = LogCapture()
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    await gateway_runner.setup()
    await web.SockSite(gateway_runner, listening).start()
    try:
        async with aiohttp.ClientSession() as http:
            yield Stack(
                google=google,
                google_url=google_url,
                settings=settings,
                app=app,
                base_url=public_url,
                engine=engine,
                http=http,
                api_key=api_key,
                other_tenant_key=other,
            )
    finally:
        await gateway_runner.cleanup()
        await google_server.close()
        root.removeHandler(capture)
        root.setLevel(previous_level)
    # After the test: no line the gateway logged holds a token, code or secret (issue 4: "no
    # token in any log line captured during the whole suite"; every stack test checks it).
    assert_no_secret_logged(capture.lines, issued_secrets(google) | {api_key, other})
