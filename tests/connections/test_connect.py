"""Connecting a Google Calendar, end to end over real HTTP: gateway <-> emulator, both backends.

The browser is scripted (tests/support/stack.py): it follows the gateway's connect URL to the
emulator's consent endpoint, then Google's redirect back to the gateway's callback, and lands on the
return URL whose query says how it went.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.apikeys import SCOPES, ApiKeyStore
from gateway.app import create_app
from gateway.audit import AuditLog
from gateway.clock import utc_now
from gateway.connections.connect import ConnectService, with_query
from gateway.connections.model import (
    PURPOSE_ACCESS_TOKEN,
    PURPOSE_REFRESH_TOKEN,
    Integration,
    Status,
)
from gateway.connections.repository import IntegrationRepository, SealedTokens
from gateway.connections.return_urls import return_url_allowed
from gateway.db.schema import audit_log, connect_sessions, integrations
from gateway.google.oauth_client import TokenGrant
from gateway.google.oauth_flow import ExchangeFailed, GoogleIdentity
from gateway.http.appkeys import INTEGRATIONS_KEY, VAULT_KEY
from gateway.settings import AVAILABILITY_SCOPE, BOOKING_SCOPE, load_settings
from gateway.webhooks.outbox import IntegrationOutbox
from gateway.wiring import open_vault
from tests.support.stack import (
    ALICE,
    ALICE_SUB,
    BOB,
    BOB_SUB,
    CAROL,
    CAROL_SUB,
    DAVE,
    GATEWAY_CLIENT_ID,
    GATEWAY_CLIENT_SECRET,
    RETURN_URL,
    LogCapture,
    Stack,
    issued_secrets,
)
from vault.envelope import SealContext


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def integration(stack: Stack, integration_id: str, key: str | None = None) -> Any:
    async with stack.http.get(
        stack.url(f"/v1/integrations/{integration_id}"), headers=stack.auth(key)
    ) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def integration_rows(stack: Stack) -> list[Any]:
    async with stack.engine.connect() as conn:
        return list((await conn.execute(select(integrations))).mappings().all())


async def audit_rows(stack: Stack) -> list[Any]:
    async with stack.engine.connect() as conn:
        return list((await conn.execute(select(audit_log).order_by(audit_log.c.id))).mappings())


async def outcomes(stack: Stack) -> list[str]:
    return [r["outcome"] for r in await audit_rows(stack) if r["action"] == "connect"]


async def first_leg(stack: Stack, email: str, user_id: str = "u-1") -> str:
    """Start a session and let Google answer: returns the callback URL (not yet visited)."""
    session = await stack.start_connect(user_id, login_hint=email)
    return await stack.browser_get(session["connect_url"])


# -- the happy path ---------------------------------------------------------------------------


async def test_alice_connects_and_her_tokens_are_stored_sealed(stack: Stack) -> None:
    result = await stack.connect(ALICE, user_id="u-1")

    assert result["status"] == "connected"
    body = await integration(stack, result["integration_id"])
    assert body["status"] == "active"
    assert body["user_id"] == "u-1"
    assert body["google_email"] == ALICE
    assert {AVAILABILITY_SCOPE, BOOKING_SCOPE} <= set(body["granted_scopes"])
    assert body["capabilities"] == ["availability", "booking"]
    assert body["created_at"].endswith("Z")

    # The authorization request was what the issue asks for.
    sent = stack.google.inspector.requests(endpoint="authorize")[-1].query
    assert sent["access_type"] == "offline"
    assert sent["prompt"] == "consent"
    assert "include_granted_scopes" not in sent
    assert sent["code_challenge_method"] == "S256"
    assert sent["login_hint"] == ALICE
    assert sent["redirect_uri"] == stack.settings.oauth_redirect_uri
    assert len(base64.urlsafe_b64decode(sent["state"] + "==")) >= 16  # >= 128 bits
    assert set(sent["scope"].split()) == set(stack.settings.google_scopes)

    # The row holds sealed blobs that open (with the right purpose) to what Google issued, and
    # no plaintext token at all.
    [row] = await integration_rows(stack)
    grant = stack.google.active_grants(ALICE_SUB, GATEWAY_CLIENT_ID)[-1]
    vault = stack.app[VAULT_KEY]
    refresh = await vault.open(
        SealContext("acme", row["id"], PURPOSE_REFRESH_TOKEN), row["refresh_token"]
    )
    assert refresh.decode() == grant.refresh_token
    access = await vault.open(
        SealContext("acme", row["id"], PURPOSE_ACCESS_TOKEN), row["access_token"]
    )
    assert access.decode() in stack.google.access_tokens
    raw = b"".join(v if isinstance(v, bytes) else str(v).encode() for v in dict(row).values())
    for secret in issued_secrets(stack.google):
        assert secret.encode() not in raw
    assert row["access_token_expires_at"] is not None

    assert await outcomes(stack) == ["ok"]


FULL_CALENDAR = "https://www.googleapis.com/auth/calendar"


async def test_an_earlier_broader_grant_is_not_folded_into_the_new_one(stack: Stack) -> None:
    """Finding 6 of issue 14: with include_granted_scopes=true, a token carried the full
    `calendar` scope Alice had granted this client before."""
    stack.google.issue_tokens(ALICE, GATEWAY_CLIENT_ID, [FULL_CALENDAR])
    result = await stack.connect(ALICE, user_id="u-1")
    body = await integration(stack, result["integration_id"])
    assert FULL_CALENDAR not in body["granted_scopes"]
    assert body["excess_scopes"] == []
    newest = stack.google.active_grants(ALICE_SUB, GATEWAY_CLIENT_ID)[-1]
    assert FULL_CALENDAR not in newest.scopes


async def test_a_grant_broader_than_asked_is_shown_and_audited(stack: Stack) -> None:
    """When Google merges an earlier grant anyway, the integration says so: in its status, its
    export and the audit entry of the connection."""
    stack.google.issue_tokens(ALICE, GATEWAY_CLIENT_ID, [FULL_CALENDAR])
    stack.google.merge_earlier_grants = True
    result = await stack.connect(ALICE, user_id="u-1")
    integration_id = result["integration_id"]
    body = await integration(stack, integration_id)
    assert FULL_CALENDAR in body["granted_scopes"]
    assert body["excess_scopes"] == [FULL_CALENDAR]
    async with stack.http.get(
        stack.url(f"/v1/integrations/{integration_id}/export"), headers=stack.auth()
    ) as response:
        export = await response.json()
    assert export["integration"]["excess_scopes"] == [FULL_CALENDAR]
    [entry] = [e for e in export["audit"] if e["action"] == "connect"]
    assert entry["detail"]["excess_scopes"] == FULL_CALENDAR

    # Dave, who granted exactly what was asked, has none.
    dave = await stack.connect(DAVE, user_id="u-dave")
    assert (await integration(stack, dave["integration_id"]))["excess_scopes"] == []


async def test_a_used_connect_session_keeps_neither_verifier_nor_email(stack: Stack) -> None:
    # The login hint is the user's email: once the callback used the session it has no
    # purpose, and a later disconnect must leave no email behind (found by the demo's scan).
    result = await stack.connect(ALICE, user_id="u-1")
    assert result["status"] == "connected"
    async with stack.engine.connect() as conn:
        stored = (await conn.execute(select(connect_sessions))).mappings().one()
    assert stored["consumed_at"] is not None
    assert stored["login_hint"] is None
    assert stored["code_verifier"] == ""


async def test_abandoned_sessions_are_purged_without_a_new_connection(stack: Stack) -> None:
    """A user who never finished the consent leaves a session holding their email: a gateway
    that sees no new connection must still purge it, a day after it expired."""
    await stack.start_connect("u-old", login_hint=ALICE)
    await stack.start_connect("u-new", login_hint=BOB)
    async with stack.engine.begin() as conn:
        await conn.execute(
            update(connect_sessions)
            .where(connect_sessions.c.user_id == "u-old")
            .values(expires_at=utc_now() - timedelta(days=2))
        )

    app = create_app(stack.settings, engine=stack.engine)  # another process, or a restart
    # The purge runs at start-up, before the app serves.
    async with TestServer(app, host="127.0.0.1", port=0), stack.engine.connect() as conn:
        users = (await conn.execute(select(connect_sessions.c.user_id))).scalars().all()
    assert users == ["u-new"]  # the live session stays usable
    async with stack.engine.connect() as conn:
        hints = (await conn.execute(select(connect_sessions.c.login_hint))).scalars().all()
    assert hints == [BOB]


async def test_connect_url_points_at_google_and_carries_no_secret(stack: Stack) -> None:
    session = await stack.start_connect("u-1")
    url = session["connect_url"]
    assert url.startswith(stack.settings.google_auth_uri + "?")
    query = query_of(url)
    assert query["client_id"] == GATEWAY_CLIENT_ID
    assert GATEWAY_CLIENT_SECRET not in url
    assert "code_verifier" not in query
    assert "login_hint" not in query
    # The verifier stored for the session is what the challenge commits to.
    async with stack.engine.connect() as conn:
        stored = (await conn.execute(select(connect_sessions))).mappings().one()
    digest = hashlib.sha256(stored["code_verifier"].encode()).digest()
    assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == query["code_challenge"]
    assert stored["state_sha256"] == hashlib.sha256(query["state"].encode()).hexdigest()
    assert query["state"] not in json.dumps({k: str(v) for k, v in stored.items()})
    expires = session["expires_at"]
    assert expires.endswith("Z")


# -- the user's choices on Google's consent screen --------------------------------------------


async def test_bob_refuses_and_nothing_is_stored(stack: Stack) -> None:
    result = await stack.connect(BOB, user_id="u-bob")
    assert result == {"status": "error", "error": "access_denied", "user_id": "u-bob"}
    assert await integration_rows(stack) == []
    assert stack.google.active_grants(BOB_SUB, GATEWAY_CLIENT_ID) == []
    assert await outcomes(stack) == ["access_denied"]


async def test_carol_grants_no_calendar_scope_and_the_partial_grant_is_revoked(
    stack: Stack,
) -> None:
    result = await stack.connect(CAROL, user_id="u-carol")
    assert result == {"status": "error", "error": "insufficient_scope", "user_id": "u-carol"}
    assert await integration_rows(stack) == []
    # She did grant sign-in scopes: the gateway gave that grant back.
    revoked = stack.google.revoked_grants(CAROL_SUB)
    assert len(revoked) == 1 and revoked[0].revoked_by == "revoke_endpoint"
    assert stack.google.active_grants(CAROL_SUB, GATEWAY_CLIENT_ID) == []
    [entry] = [r for r in await audit_rows(stack) if r["action"] == "connect"]
    assert entry["outcome"] == "insufficient_scope"
    assert json.loads(entry["detail"]) == {"revoked": True}


async def test_dave_grants_availability_only(stack: Stack) -> None:
    result = await stack.connect(DAVE, user_id="u-dave")
    assert result["status"] == "connected"
    body = await integration(stack, result["integration_id"])
    assert body["capabilities"] == ["availability"]
    assert BOOKING_SCOPE not in body["granted_scopes"]
    assert body["status"] == "active"


# -- state: forged, replayed, expired ---------------------------------------------------------


def refused(reason: str) -> float:
    value = REGISTRY.get_sample_value("gateway_connect_callbacks_refused_total", {"reason": reason})
    return value or 0.0


async def test_forged_or_missing_state_gets_a_plain_page_not_a_redirect(stack: Stack) -> None:
    before = {reason: refused(reason) for reason in ("unknown_state", "missing_state")}
    for query in ({"state": "forged-state", "code": "4/0Aemu-x"}, {"code": "x"}, {}):
        url = stack.url("/oauth/google/callback") + ("?" + urlencode(query) if query else "")
        async with stack.http.get(url, allow_redirects=False) as response:
            assert response.status == 400
            assert "Location" not in response.headers
            assert response.content_type == "text/plain"
            assert response.headers["Cache-Control"] == "no-store"
            assert "invalid_state" in await response.text()
    # Nobody is identified: counted, not audited (finding 3 of issue 14).
    assert await audit_rows(stack) == []
    assert refused("unknown_state") == before["unknown_state"] + 1
    assert refused("missing_state") == before["missing_state"] + 2


async def test_replayed_callback_finds_the_state_spent(stack: Stack) -> None:
    callback = await first_leg(stack, ALICE)
    first = await stack.browser_get(callback)
    assert query_of(first)["status"] == "connected"

    again = await stack.browser_get(callback)
    assert again.startswith(RETURN_URL)
    assert query_of(again) == {"status": "error", "error": "invalid_state"}
    assert len(await integration_rows(stack)) == 1
    # A replay can be repeated at will: counted, not audited.
    assert await outcomes(stack) == ["ok"]

    # And Google itself refuses the code a second time.
    code = query_of(callback)["code"]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": stack.settings.oauth_redirect_uri,
        "client_id": GATEWAY_CLIENT_ID,
        "client_secret": GATEWAY_CLIENT_SECRET,
    }
    async with stack.http.post(stack.settings.google_token_uri, data=form) as response:
        assert response.status == 400
        assert (await response.json())["error"] == "invalid_grant"


async def test_expired_session(stack: Stack) -> None:
    callback = await first_leg(stack, ALICE)
    async with stack.engine.begin() as conn:
        await conn.execute(
            update(connect_sessions).values(expires_at=utc_now() - timedelta(seconds=1))
        )
    back = await stack.browser_get(callback)
    assert query_of(back) == {"status": "error", "error": "expired_session", "user_id": "u-1"}
    assert await integration_rows(stack) == []
    # The code was never redeemed.
    assert stack.google.inspector.token_calls_for(ALICE_SUB, "authorization_code") == 0
    assert await outcomes(stack) == ["expired_session"]


async def test_pkce_mismatch_fails_the_exchange(stack: Stack) -> None:
    callback = await first_leg(stack, ALICE)
    async with stack.engine.begin() as conn:
        await conn.execute(update(connect_sessions).values(code_verifier="x" * 64))
    back = await stack.browser_get(callback)
    assert query_of(back) == {"status": "error", "error": "exchange_failed", "user_id": "u-1"}
    assert await integration_rows(stack) == []
    token_calls = stack.google.inspector.requests(endpoint="token")
    assert [r.status for r in token_calls] == [400]
    assert await outcomes(stack) == ["exchange_failed"]


async def test_google_error_other_than_denial_is_exchange_failed(stack: Stack) -> None:
    session = await stack.start_connect("u-1", login_hint=ALICE)
    state = query_of(session["connect_url"])["state"]
    url = stack.url("/oauth/google/callback?") + urlencode(
        {"state": state, "error": "server_error"}
    )
    back = await stack.browser_get(url)
    assert query_of(back) == {"status": "error", "error": "exchange_failed", "user_id": "u-1"}
    [entry] = await audit_rows(stack)
    assert json.loads(entry["detail"]) == {"google_error": "server_error"}


@pytest.mark.parametrize(
    ("sent", "recorded"),
    [
        ("<script>alert(document.cookie)</script>", "other"),
        ("access_denied\r\nforged", "other"),
        ("x" * 5000, "other"),
        ("invalid_scope", "invalid_scope"),
        ("admin_policy_enforced", "admin_policy_enforced"),
    ],
)
async def test_google_error_is_recorded_as_a_known_code_only(
    stack: Stack, sent: str, recorded: str
) -> None:
    """Finding 4 of issue 14: whatever the browser puts in `error` reached the audit detail."""
    session = await stack.start_connect("u-1", login_hint=ALICE)
    state = query_of(session["connect_url"])["state"]
    url = stack.url("/oauth/google/callback?") + urlencode({"state": state, "error": sent})
    back = await stack.browser_get(url)
    assert query_of(back) == {"status": "error", "error": "exchange_failed", "user_id": "u-1"}
    [entry] = await audit_rows(stack)
    assert json.loads(entry["detail"]) == {"google_error": recorded}


# -- app_state: binding the returning browser (login CSRF) -------------------------------------


async def start_with_app_state(stack: Stack, app_state: Any, email: str) -> aiohttp.ClientResponse:
    body = {"user_id": "u-app", "return_url": RETURN_URL, "login_hint": email}
    return await stack.http.post(
        stack.url("/v1/connect-sessions"),
        json={**body, "app_state": app_state},
        headers=stack.auth(),
    )


async def test_app_state_comes_back_with_the_user_id_and_is_never_logged(stack: Stack) -> None:
    """Finding 8 of issue 14: a connect URL works from any browser, so the app needs something
    of its own back to check that the browser returning is the one that started."""
    capture = LogCapture()
    logging.getLogger().addHandler(capture)
    try:
        app_state = "h1:" + "Zx9-_.~!*" * 20  # e.g. an HMAC of the app's own session id
        async with await start_with_app_state(stack, app_state, ALICE) as response:
            assert response.status == 201, await response.text()
            session = await response.json()
        callback = await stack.browser_get(session["connect_url"])
        back = await stack.browser_get(callback)
        query = query_of(back)
        assert query["status"] == "connected"
        assert (query["user_id"], query["app_state"]) == ("u-app", app_state)

        # Used once: the session no longer holds it, and a replay gets neither it nor user_id.
        async with stack.engine.connect() as conn:
            stored = (await conn.execute(select(connect_sessions.c.app_state))).scalars().all()
        assert stored == [None]
        again = query_of(await stack.browser_get(callback))
        assert again == {"status": "error", "error": "invalid_state"}

        # A refusal at Google comes back with it too.
        async with await start_with_app_state(stack, "s2", BOB) as response:
            session = await response.json()
        refused = query_of(await stack.browser_get(await stack.browser_get(session["connect_url"])))
        assert refused == {
            "status": "error",
            "error": "access_denied",
            "user_id": "u-app",
            "app_state": "s2",
        }
    finally:
        logging.getLogger().removeHandler(capture)
    assert capture.lines
    assert not [line for line in capture.lines if "Zx9-_.~!*" in line]


@pytest.mark.parametrize(
    "bad", ["", "x" * 513, "with space", "line\nbreak", "caf\u00e9", "tab\there", 12345, ["x"]]
)
async def test_a_bad_app_state_is_refused_and_stores_nothing(stack: Stack, bad: Any) -> None:
    async with await start_with_app_state(stack, bad, ALICE) as response:
        assert response.status == 422, await response.text()
        assert response.content_type == "application/problem+json"
        problem = await response.json()
    assert problem["field"] == "app_state" or "app_state" in problem["detail"]
    async with stack.engine.connect() as conn:
        assert (await conn.execute(select(connect_sessions))).first() is None


# -- the session request ----------------------------------------------------------------------


async def test_return_url_must_be_allowed(stack: Stack) -> None:
    for bad in (
        "https://evil.example.com/x",
        "https://app.example.com.evil.com/x",
        "https://app.example.com@evil.com/",
        "http://app.example.com/",
        "javascript:alert(1)",
        "https://app.example.com\\@evil.example/",
        "https://app.example.com/..;/admin",
        "https://app.example.com/a%2f..%2f..%2fadmin",
    ):
        async with stack.http.post(
            stack.url("/v1/connect-sessions"),
            json={"user_id": "u-1", "return_url": bad},
            headers=stack.auth(),
        ) as response:
            assert response.status == 422, bad
            assert response.content_type == "application/problem+json"
            problem = await response.json()
            assert problem["code"] == "return_url_not_allowed"
            assert problem["detail"].startswith("return_url:")
    async with stack.engine.connect() as conn:
        assert (await conn.execute(select(connect_sessions))).first() is None


async def test_the_browser_returns_to_the_url_that_was_checked(stack: Stack) -> None:
    """The session stores the return URL in the canonical form the prefix check saw, so the
    browser lands exactly there."""
    body = {"user_id": "u-1", "return_url": "HTTPS://App.Example.com:443/a/./b/%2e%2e/c%7e?x=1"}
    async with stack.http.post(
        stack.url("/v1/connect-sessions"), json=body, headers=stack.auth()
    ) as response:
        assert response.status == 201, await response.text()
        session = await response.json()
    back = await stack.browser_get(await stack.browser_get(session["connect_url"]))
    assert back.startswith("https://app.example.com/a/c~?x=1&status=connected&"), back


def test_return_url_prefix_rules() -> None:
    prefixes = ["https://app.example.com", "https://b.example.com/cb/"]
    assert return_url_allowed("https://app.example.com", prefixes)
    assert return_url_allowed("https://app.example.com/x?y=1", prefixes)
    assert return_url_allowed("https://b.example.com/cb/done", prefixes)
    assert not return_url_allowed("https://app.example.com.evil.com/", prefixes)
    assert not return_url_allowed("https://app.example.com@evil.com/", prefixes)
    assert not return_url_allowed("https://app.example.comx/", prefixes)
    assert not return_url_allowed("https://b.example.com/other", prefixes)
    assert not return_url_allowed("https://app.example.com/\r\nx", prefixes)
    assert not return_url_allowed("https://app.example.com/", [])


def test_with_query_keeps_own_parameters_but_not_ours() -> None:
    url = with_query("https://a.example/cb?x=1&status=forged#frag", {"status": "connected"})
    assert url == "https://a.example/cb?x=1&status=connected#frag"


async def test_session_needs_the_write_scope(stack: Stack) -> None:
    reader = (await ApiKeyStore(stack.engine).create("acme", ["connections:read"])).value
    body = {"user_id": "u-1", "return_url": RETURN_URL}
    async with stack.http.post(
        stack.url("/v1/connect-sessions"), json=body, headers=stack.auth(reader)
    ) as response:
        assert response.status == 403
        assert (await response.json())["code"] == "insufficient_scope"
    async with stack.http.post(stack.url("/v1/connect-sessions"), json=body) as response:
        assert response.status == 401
        assert response.content_type == "application/problem+json"


async def test_connect_without_google_configured_is_503(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    settings = load_settings(
        env_file=None,
        database_url=database_url,
        kek_uri=f"file:{tmp_path / 'k.json'}",
        allowed_return_urls=["https://app.example.com/"],
    )
    key = (await ApiKeyStore(engine).create("acme", SCOPES)).value
    async with TestClient(TestServer(create_app(settings, engine=engine))) as client:
        response = await client.post(
            "/v1/connect-sessions",
            json={"user_id": "u-1", "return_url": RETURN_URL},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert response.status == 503
        assert (await response.json())["code"] == "google_not_configured"


# -- reconnecting -----------------------------------------------------------------------------


async def test_reconnect_reuses_the_integration_and_reactivates_it(stack: Stack) -> None:
    first = await stack.connect(ALICE, user_id="u-1")
    integration_id = first["integration_id"]
    [before] = await integration_rows(stack)
    repo = stack.app[INTEGRATIONS_KEY]
    assert await repo.set_status(integration_id, Status.NEEDS_REAUTH, reason="invalid_grant")

    second = await stack.connect(ALICE, user_id="u-1")
    assert second == {"status": "connected", "integration_id": integration_id, "user_id": "u-1"}
    [after] = await integration_rows(stack)
    assert after["status"] == "active"
    assert after["reauth_reason"] is None
    assert after["refresh_token"] != before["refresh_token"]
    newest = stack.google.active_grants(ALICE_SUB, GATEWAY_CLIENT_ID)[-1]
    opened = await stack.app[VAULT_KEY].open(
        SealContext("acme", integration_id, PURPOSE_REFRESH_TOKEN), after["refresh_token"]
    )
    assert opened.decode() == newest.refresh_token
    entries = [r for r in await audit_rows(stack) if r["action"] == "connect"]
    assert [json.loads(e["detail"])["reconnect"] for e in entries] == [False, True]

    # Another user id of the same tenant is another integration.
    third = await stack.connect(ALICE, user_id="u-2")
    assert third["integration_id"] != integration_id


# -- the audit trail --------------------------------------------------------------------------


async def test_audit_entries_hold_no_email_and_no_token(stack: Stack) -> None:
    await stack.connect(ALICE, user_id="u-1")
    await stack.connect(BOB, user_id="u-2")
    await stack.connect(CAROL, user_id="u-3")
    await stack.connect(DAVE, user_id="u-4")
    rows = await audit_rows(stack)
    assert [r["outcome"] for r in rows] == ["ok", "access_denied", "insufficient_scope", "ok"]
    text = json.dumps([{k: str(v) for k, v in r.items()} for r in rows])
    for forbidden in {ALICE, BOB, CAROL, DAVE, "@"} | issued_secrets(stack.google):
        assert forbidden not in text
    assert all(r["tenant_id"] == "acme" for r in rows)


async def test_the_callback_never_answers_500(stack: Stack) -> None:
    session = await stack.start_connect("u-1", login_hint=ALICE)
    state = query_of(session["connect_url"])["state"]
    weird = {"state": state, "code": "\x00" * 10 + "é"}
    async with aiohttp.ClientSession() as http:
        url = stack.url("/oauth/google/callback?") + urlencode(weird)
        async with http.get(url, allow_redirects=False) as response:
            assert response.status == 302
            assert query_of(response.headers["Location"])["error"] == "exchange_failed"


# -- ConnectService on its own: injected clock, randomness, flow and revoker -------------------


class FakeFlow:
    """A working stand-in for Google: issues fixed tokens, or fails where told to."""

    def __init__(self, *, refresh: str | None = "rt-fake", identity_ok: bool = True) -> None:
        self.refresh = refresh
        self.identity_ok = identity_ok
        self.verifiers: list[str] = []

    def authorization_url(self, *, state: str, code_verifier: str, login_hint: str | None) -> str:
        return "https://accounts.test/auth?" + urlencode({"state": state})

    async def exchange(self, *, code: str, code_verifier: str) -> TokenGrant:
        self.verifiers.append(code_verifier)
        return TokenGrant(
            access_token="at-fake",
            refresh_token=self.refresh,
            id_token="idt-fake",
            scopes=frozenset({"openid", AVAILABILITY_SCOPE, BOOKING_SCOPE}),
            expires_in_s=3600,
        )

    async def verify_identity(self, tokens: TokenGrant) -> GoogleIdentity:
        if not self.identity_ok:
            raise ExchangeFailed("id_token not verified (test)", tokens)
        return GoogleIdentity(sub="sub-1", email="someone@example.com")


class FakeRevoker:
    def __init__(self) -> None:
        self.revoked: list[str] = []

    async def revoke(self, token: str) -> bool:
        self.revoked.append(token)
        return True


class BrokenRepository(IntegrationRepository):
    async def insert(self, integration: Integration, tokens: SealedTokens) -> None:
        raise RuntimeError("database down; params: someone@example.com")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def service_parts(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> AsyncIterator[dict[str, Any]]:
    settings = load_settings(
        env_file=None,
        database_url=database_url,
        kek_uri=f"file:{tmp_path / 'k.json'}",
        allowed_return_urls=["https://app.example.com/"],
        google_client_id="cid",
        google_client_secret="csecret",
    )
    vault = await open_vault(settings, engine)
    try:
        yield {
            "repository": IntegrationRepository(engine, announcer=IntegrationOutbox()),
            "vault": vault,
            "audit": AuditLog(engine),
            "settings": settings,
        }
    finally:
        await vault.close()


def counting_bytes() -> Callable[[int], bytes]:
    calls = iter(range(1, 1000))
    return lambda n: bytes([next(calls)]) * n


async def start(service: ConnectService) -> str:
    started = await service.create_session(
        tenant_id="acme", user_id="u-1", return_url=RETURN_URL, login_hint=None
    )
    return query_of(started.connect_url)["state"]


async def test_state_and_verifier_come_from_the_injected_randomness(
    service_parts: dict[str, Any],
) -> None:
    flow = FakeFlow()
    service = ConnectService(
        **service_parts, flow=flow, revoker=None, clock=Clock(), token_bytes=counting_bytes()
    )
    state = await start(service)
    assert state == base64.urlsafe_b64encode(b"\x01" * 32).rstrip(b"=").decode()
    outcome = await service.complete_callback({"state": state, "code": "c"})
    assert outcome.error is None and outcome.integration_id == "int_" + "03" * 12
    assert flow.verifiers == [base64.urlsafe_b64encode(b"\x02" * 48).rstrip(b"=").decode()]


async def test_expiry_follows_the_injected_clock(service_parts: dict[str, Any]) -> None:
    clock = Clock()
    service = ConnectService(**service_parts, flow=FakeFlow(), revoker=None, clock=clock)
    state = await start(service)
    clock.now += timedelta(seconds=599)
    fresh = await start(service)
    clock.now += timedelta(seconds=1)  # the first session's TTL (600 s) is over
    outcome = await service.complete_callback({"state": state, "code": "c"})
    assert outcome.error == "expired_session"
    outcome = await service.complete_callback({"state": fresh, "code": "c"})
    assert outcome.error is None


async def test_storage_failure_gives_the_grant_back(service_parts: dict[str, Any]) -> None:
    revoker = FakeRevoker()
    parts = {
        **service_parts,
        "repository": BrokenRepository(
            service_parts["repository"].engine, announcer=IntegrationOutbox()
        ),
    }
    service = ConnectService(**parts, flow=FakeFlow(), revoker=revoker)
    outcome = await service.complete_callback({"state": await start(service), "code": "c"})
    assert outcome.error == "exchange_failed"
    assert outcome.location is not None and outcome.location.startswith(RETURN_URL)
    assert revoker.revoked == ["rt-fake"]


async def test_unverified_identity_or_no_refresh_token_is_refused_and_revoked(
    service_parts: dict[str, Any],
) -> None:
    revoker = FakeRevoker()
    service = ConnectService(**service_parts, flow=FakeFlow(identity_ok=False), revoker=revoker)
    outcome = await service.complete_callback({"state": await start(service), "code": "c"})
    assert outcome.error == "exchange_failed"

    service = ConnectService(**service_parts, flow=FakeFlow(refresh=None), revoker=revoker)
    outcome = await service.complete_callback({"state": await start(service), "code": "c"})
    assert outcome.error == "exchange_failed"
    assert revoker.revoked == ["rt-fake", "at-fake"]
    assert await service_parts["repository"].list_for_user("acme", None) == []


async def test_a_flood_of_forged_states_writes_no_audit_row(service_parts: dict[str, Any]) -> None:
    """Finding 3 of issue 14: 3,000 callbacks with random states wrote 3,000 audit rows. They
    are counted, and logged once a minute at most, each line saying how many it stands for."""
    clock = Clock()
    service = ConnectService(**service_parts, flow=FakeFlow(), revoker=None, clock=clock)
    capture = LogCapture()
    logger = logging.getLogger("gateway.connections.connect")
    logger.addHandler(capture)
    before = refused("unknown_state")
    try:
        for n in range(300):
            if n == 150:
                clock.now += timedelta(seconds=59)  # still inside the first minute
            outcome = await service.complete_callback({"state": f"forged-{n}", "code": "c"})
            assert (outcome.error, outcome.location) == ("invalid_state", None)
        clock.now += timedelta(seconds=1)
        await service.complete_callback({"state": "forged-last", "code": "c"})
    finally:
        logger.removeHandler(capture)
    assert await AuditLog(service_parts["repository"].engine).entries() == []
    assert refused("unknown_state") == before + 301
    lines = [line for line in capture.lines if "callback refused" in line]
    assert len(lines) == 2, lines
    assert "(1 such since the last line)" in lines[0]
    assert "(300 such since the last line)" in lines[1]


async def test_audit_entries_older_than_the_retention_are_purged(engine: AsyncEngine) -> None:
    clock = Clock()
    audit = AuditLog(engine, clock=clock)
    await audit.record("connect", "ok", tenant_id="acme", integration_id="int_old")
    clock.now += timedelta(days=200)
    await audit.record("connect", "ok", tenant_id="acme", integration_id="int_new")
    clock.now += timedelta(days=200)
    assert await audit.purge(older_than=timedelta(days=400)) == 0  # exactly 400 days: kept
    clock.now += timedelta(seconds=1)
    assert await audit.purge(older_than=timedelta(days=400)) == 1
    assert [e.integration_id for e in await audit.entries()] == ["int_new"]


async def test_the_gateway_purges_old_audit_entries_when_it_starts(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    settings = load_settings(
        env_file=None,
        database_url=database_url,
        kek_uri=f"file:{tmp_path / 'k.json'}",
        audit_retention_days=30,
    )
    old = Clock()
    old.now = utc_now() - timedelta(days=31)
    await AuditLog(engine, clock=old).record("connect", "ok", integration_id="int_old")
    old.now = utc_now() - timedelta(days=29)
    await AuditLog(engine, clock=old).record("connect", "ok", integration_id="int_kept")
    async with TestServer(create_app(settings, engine=engine), host="127.0.0.1", port=0):
        kept = [e.integration_id for e in await AuditLog(engine).entries()]
    assert kept == ["int_kept"]


async def test_long_expired_sessions_are_purged(service_parts: dict[str, Any]) -> None:
    clock = Clock()
    service = ConnectService(**service_parts, flow=FakeFlow(), revoker=None, clock=clock)
    old = await start(service)
    await service.complete_callback({"state": old, "code": "c"})
    clock.now += timedelta(seconds=600) + timedelta(hours=23)
    await start(service)  # still within the grace: the spent state is recognised
    outcome = await service.complete_callback({"state": old, "code": "c"})
    assert (outcome.error, outcome.location is not None) == ("invalid_state", True)

    clock.now += timedelta(hours=2)
    await start(service)
    outcome = await service.complete_callback({"state": old, "code": "c"})
    assert (outcome.error, outcome.location) == ("invalid_state", None)
    async with service_parts["repository"].engine.connect() as conn:
        assert len((await conn.execute(select(connect_sessions))).all()) == 2
