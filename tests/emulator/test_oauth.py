"""The emulator's OAuth endpoints answer like Google, over real HTTP, error wordings included."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from tests.support.emulator import (
    ALICE,
    BOB,
    CALENDAR,
    CALENDAR_EVENTS,
    CALENDAR_READONLY,
    CAROL,
    TEST_CLIENT_ID,
    TEST_CLIENT_SECRET,
    TEST_REDIRECT_URI,
    USERINFO_EMAIL,
    RunningEmulator,
)

NO_STORE = "no-cache, no-store, max-age=0, must-revalidate"
VERIFIER = "v" * 43 + "-._~0123456789"


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def basic(client_id: str, secret: str) -> str:
    """An HTTP Basic client-authentication header value."""
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


async def authorize(
    emulator: RunningEmulator, http: aiohttp.ClientSession, **params: str
) -> tuple[int, dict[str, str], str]:
    """GET the authorization endpoint; return (status, redirect query params, body text)."""
    query = {
        "client_id": TEST_CLIENT_ID,
        "redirect_uri": TEST_REDIRECT_URI,
        "response_type": "code",
        "scope": CALENDAR,
        "state": "st-123",
        **params,
    }
    query = {k: v for k, v in query.items() if v != "<omit>"}
    async with http.get(
        emulator.url("/o/oauth2/v2/auth"), params=query, allow_redirects=False
    ) as r:
        text = await r.text()
        if r.status != 302:
            return r.status, {}, text
        location = r.headers["Location"]
        assert location.startswith(TEST_REDIRECT_URI + "?")
        return 302, {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}, text


async def post_token(
    emulator: RunningEmulator,
    http: aiohttp.ClientSession,
    auth: str | None = None,
    **form: str,
) -> tuple[int, dict[str, Any], aiohttp.ClientResponse]:
    if auth is None:
        form = {"client_id": TEST_CLIENT_ID, "client_secret": TEST_CLIENT_SECRET, **form}
    form = {k: v for k, v in form.items() if v != "<omit>"}
    headers = {"Authorization": auth} if auth else {}
    async with http.post(emulator.url("/token"), data=form, headers=headers) as r:
        return r.status, await r.json(), r


async def code_for(
    emulator: RunningEmulator, http: aiohttp.ClientSession, **params: str
) -> dict[str, str]:
    status, redirect, _ = await authorize(emulator, http, **params)
    assert status == 302 and "code" in redirect, redirect
    return redirect


async def exchange(
    emulator: RunningEmulator, http: aiohttp.ClientSession, code: str, **form: str
) -> tuple[int, dict[str, Any]]:
    status, body, _ = await post_token(
        emulator,
        http,
        grant_type="authorization_code",
        code=code,
        redirect_uri=TEST_REDIRECT_URI,
        **form,
    )
    return status, body


async def calendar_status(
    emulator: RunningEmulator, http: aiohttp.ClientSession, access_token: str
) -> int:
    """What a bearer-authenticated request says about a token (userinfo needs no Calendar)."""
    async with http.get(
        emulator.url("/v1/userinfo"), headers={"Authorization": f"Bearer {access_token}"}
    ) as r:
        return r.status


# -- authorization endpoint ---------------------------------------------------------------


async def test_consent_redirects_with_code_untouched_state_and_granted_scope(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    status, redirect, _ = await authorize(emulator, http, state="a b/c?=&é")
    assert status == 302
    assert redirect["state"] == "a b/c?=&é"
    assert redirect["scope"] == CALENDAR
    assert redirect["code"].startswith("4/")


async def test_unknown_client_gets_an_error_page_not_a_redirect(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    status, _, text = await authorize(emulator, http, client_id="nobody.apps.googleusercontent.com")
    assert status == 401
    assert "invalid_client" in text and "The OAuth client was not found." in text


async def test_unregistered_redirect_uri_gets_redirect_uri_mismatch_page(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    # A trailing slash is enough: Google matches redirect URIs exactly.
    status, _, text = await authorize(emulator, http, redirect_uri=TEST_REDIRECT_URI + "/")
    assert status == 400
    assert "Error 400: redirect_uri_mismatch" in text


async def test_missing_response_type_is_a_page_and_wrong_one_a_redirect(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    status, _, text = await authorize(emulator, http, response_type="<omit>")
    assert status == 400 and "invalid_request" in text
    status, redirect, _ = await authorize(emulator, http, response_type="token")
    assert status == 302
    assert redirect["error"] == "unsupported_response_type"
    assert "code" not in redirect


async def test_missing_scope_redirects_with_invalid_request(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    status, redirect, _ = await authorize(emulator, http, scope="<omit>")
    assert status == 302
    assert redirect["error"] == "invalid_request"
    assert redirect["state"] == "st-123"
    assert "code" not in redirect


@pytest.mark.parametrize("prompt", ["none consent", "login", "consent bogus"])
async def test_invalid_prompt_combinations_are_refused(
    emulator: RunningEmulator, http: aiohttp.ClientSession, prompt: str
) -> None:
    status, redirect, _ = await authorize(emulator, http, prompt=prompt)
    assert status == 302 and redirect["error"] == "invalid_request"


async def test_prompt_none_without_prior_consent_is_consent_required(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    _, redirect, _ = await authorize(emulator, http, prompt="none")
    assert redirect["error"] == "consent_required"
    emulator.issue(ALICE, [CALENDAR])
    _, redirect, _ = await authorize(emulator, http, prompt="none")
    assert "code" in redirect


async def test_deny_user_redirects_access_denied_with_state(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    status, redirect, _ = await authorize(emulator, http, login_hint=BOB.email)
    assert status == 302
    assert redirect == {"error": "access_denied", "state": "st-123"}


async def test_login_hint_accepts_sub_and_unknown_hint_is_refused(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    _, redirect, _ = await authorize(emulator, http, login_hint=BOB.sub)
    assert redirect["error"] == "access_denied"
    status, _, _ = await authorize(emulator, http, login_hint="stranger@example.com")
    assert status == 400


async def test_partial_consent_keeps_sign_in_scopes_and_drops_unticked_ones(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    redirect = await code_for(
        emulator,
        http,
        login_hint=CAROL.email,
        scope=f"openid email {CALENDAR_EVENTS} {CALENDAR_READONLY}",
    )
    # Google adds the URL form of a short sign-in scope next to it.
    expected = f"{CALENDAR_READONLY} {USERINFO_EMAIL} email openid"
    assert sorted(redirect["scope"].split()) == sorted(expected.split())
    status, body = await exchange(emulator, http, redirect["code"])
    assert status == 200
    assert set(body["scope"].split()) == set(expected.split())


async def test_include_granted_scopes_returns_union_with_earlier_grants(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    emulator.issue(ALICE, [CALENDAR_READONLY])
    redirect = await code_for(emulator, http, scope="openid", include_granted_scopes="true")
    assert set(redirect["scope"].split()) == {"openid", CALENDAR_READONLY}
    redirect = await code_for(emulator, http, scope="openid")
    assert redirect["scope"] == "openid"


async def test_merge_earlier_grants_adds_only_what_was_really_granted(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    """The control knob for a Google that merges an earlier grant into a new one although the
    client did not ask for include_granted_scopes: never a scope the user did not grant."""
    emulator.issue(ALICE, [CALENDAR_READONLY])
    async with http.patch(
        emulator.url("/_emulator/settings"), json={"merge_earlier_grants": True}
    ) as response:
        assert response.status == 200
        assert (await response.json())["merge_earlier_grants"] is True
    redirect = await code_for(emulator, http, scope="openid", login_hint=ALICE.email)
    assert set(redirect["scope"].split()) == {"openid", CALENDAR_READONLY}
    # Carol granted nothing before: she grants what she is asked, nothing more.
    redirect = await code_for(emulator, http, scope="openid", login_hint=CAROL.email)
    assert redirect["scope"] == "openid"


async def test_bad_pkce_method_is_refused(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    _, redirect, _ = await authorize(
        emulator, http, code_challenge=s256(VERIFIER), code_challenge_method="S512"
    )
    assert redirect["error"] == "invalid_request"


# -- token endpoint: code exchange ----------------------------------------------------------


async def test_code_exchange_answers_google_shaped_tokens(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    redirect = await code_for(emulator, http, access_type="offline")
    status, body, response = await post_token(
        emulator,
        http,
        grant_type="authorization_code",
        code=redirect["code"],
        redirect_uri=TEST_REDIRECT_URI,
    )
    assert status == 200
    assert response.headers["Cache-Control"] == NO_STORE
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3599
    assert body["scope"] == CALENDAR
    assert body["refresh_token"].startswith("1//")
    assert body["access_token"].startswith("ya29.")
    assert "id_token" not in body  # no openid asked


async def test_online_access_gives_no_refresh_token(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    redirect = await code_for(emulator, http)
    _, body = await exchange(emulator, http, redirect["code"])
    assert "refresh_token" not in body


async def test_second_consent_without_prompt_consent_gives_no_new_refresh_token(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    first = await code_for(emulator, http, access_type="offline")
    _, body1 = await exchange(emulator, http, first["code"])
    again = await code_for(emulator, http, access_type="offline")
    _, body2 = await exchange(emulator, http, again["code"])
    assert "refresh_token" not in body2
    forced = await code_for(emulator, http, access_type="offline", prompt="consent")
    _, body3 = await exchange(emulator, http, forced["code"])
    assert body3["refresh_token"] not in (None, body1["refresh_token"])


async def test_code_is_single_use(emulator: RunningEmulator, http: aiohttp.ClientSession) -> None:
    redirect = await code_for(emulator, http)
    assert (await exchange(emulator, http, redirect["code"]))[0] == 200
    assert await exchange(emulator, http, redirect["code"]) == (
        400,
        {"error": "invalid_grant", "error_description": "Bad Request"},
    )


async def test_code_expires_after_ten_minutes(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    redirect = await code_for(emulator, http)
    emulator.state.advance_clock(601)
    assert await exchange(emulator, http, redirect["code"]) == (
        400,
        {"error": "invalid_grant", "error_description": "Bad Request"},
    )


async def test_malformed_code(emulator: RunningEmulator, http: aiohttp.ClientSession) -> None:
    assert await exchange(emulator, http, "not-a-code") == (
        400,
        {"error": "invalid_grant", "error_description": "Malformed auth code."},
    )


async def test_redirect_uri_must_match_the_authorization_request(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    redirect = await code_for(emulator, http)
    status, body, _ = await post_token(
        emulator,
        http,
        grant_type="authorization_code",
        code=redirect["code"],
        redirect_uri="http://127.0.0.1:8080/other",
    )
    assert (status, body["error"]) == (400, "redirect_uri_mismatch")


@pytest.mark.parametrize("method", ["S256", "plain", None])
async def test_pkce_verifier_is_checked(
    emulator: RunningEmulator, http: aiohttp.ClientSession, method: str | None
) -> None:
    challenge = s256(VERIFIER) if method == "S256" else VERIFIER
    params = {"code_challenge": challenge}
    if method:
        params["code_challenge_method"] = method  # plain is the default when missing
    wrong = await code_for(emulator, http, **params)
    assert await exchange(emulator, http, wrong["code"], code_verifier="w" * 43) == (
        400,
        {"error": "invalid_grant", "error_description": "Invalid code verifier."},
    )
    missing = await code_for(emulator, http, **params)
    assert await exchange(emulator, http, missing["code"]) == (
        400,
        {"error": "invalid_grant", "error_description": "Missing code verifier."},
    )
    right = await code_for(emulator, http, **params)
    assert (await exchange(emulator, http, right["code"], code_verifier=VERIFIER))[0] == 200


async def test_verifier_without_challenge_is_refused(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    redirect = await code_for(emulator, http)
    assert await exchange(emulator, http, redirect["code"], code_verifier=VERIFIER) == (
        400,
        {"error": "invalid_grant", "error_description": "code_verifier or verifier is not needed."},
    )


async def test_client_authentication_errors(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    redirect = await code_for(emulator, http)
    base = {"grant_type": "authorization_code", "code": redirect["code"]}
    base["redirect_uri"] = TEST_REDIRECT_URI
    unknown = await post_token(emulator, http, **{**base, "client_id": "ghost"})
    assert unknown[:2] == (
        401,
        {"error": "invalid_client", "error_description": "The OAuth client was not found."},
    )
    wrong = await post_token(emulator, http, **{**base, "client_secret": "nope"})
    assert wrong[:2] == (401, {"error": "invalid_client", "error_description": "Unauthorized"})
    basic_wrong = await post_token(emulator, http, auth=basic(TEST_CLIENT_ID, "nope"), **base)
    assert basic_wrong[:2] == (
        401,
        {"error": "invalid_client", "error_description": "Unauthorized"},
    )
    # The code survived those failures and works with HTTP Basic client authentication.
    with_basic = await post_token(
        emulator, http, auth=basic(TEST_CLIENT_ID, TEST_CLIENT_SECRET), **base
    )
    assert with_basic[0] == 200


@pytest.mark.parametrize("missing", ["code", "redirect_uri"])
async def test_missing_parameter_is_named(
    emulator: RunningEmulator, http: aiohttp.ClientSession, missing: str
) -> None:
    form = {"grant_type": "authorization_code", "code": "4/x", "redirect_uri": TEST_REDIRECT_URI}
    form[missing] = "<omit>"
    status, body, _ = await post_token(emulator, http, **form)
    assert (status, body) == (
        400,
        {"error": "invalid_request", "error_description": f"Missing required parameter: {missing}"},
    )


async def test_unsupported_grant_type(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    status, body, _ = await post_token(emulator, http, grant_type="password")
    assert (status, body["error"]) == (400, "unsupported_grant_type")


async def test_id_token_carries_identity_claims(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    redirect = await code_for(emulator, http, scope=f"openid email {CALENDAR}", nonce="n-1")
    _, body = await exchange(emulator, http, redirect["code"])
    claims = jwt_claims(body["id_token"])
    assert claims["iss"] == "https://accounts.google.com"
    assert claims["aud"] == TEST_CLIENT_ID
    assert (claims["sub"], claims["email"], claims["email_verified"]) == (
        ALICE.sub,
        ALICE.email,
        True,
    )
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["nonce"] == "n-1"
    header = json.loads(base64.urlsafe_b64decode(body["id_token"].split(".")[0] + "=="))
    async with http.get(emulator.url("/oauth2/v3/certs")) as r:
        keys = (await r.json())["keys"]
    assert header["alg"] == "RS256" and header["kid"] == keys[0]["kid"]


async def test_token_lifetime_is_configurable(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    emulator.state.access_token_lifetime_s = 120
    redirect = await code_for(emulator, http)
    _, body = await exchange(emulator, http, redirect["code"])
    assert body["expires_in"] == 120


# -- token endpoint: refresh ------------------------------------------------------------------


async def refresh(
    emulator: RunningEmulator, http: aiohttp.ClientSession, refresh_token: str
) -> tuple[int, dict[str, Any]]:
    status, body, _ = await post_token(
        emulator, http, grant_type="refresh_token", refresh_token=refresh_token
    )
    return status, body


async def test_refresh_gives_a_new_access_token_and_no_refresh_token(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    issued = emulator.issue(ALICE, ["openid", CALENDAR])
    assert issued.refresh_token
    status, body = await refresh(emulator, http, issued.refresh_token)
    assert status == 200
    assert body["access_token"] != issued.token
    assert "refresh_token" not in body
    assert set(body["scope"].split()) == {"openid", CALENDAR}
    assert "id_token" in body


async def test_access_token_expires_and_refresh_revives_access(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    issued = emulator.issue(ALICE, ["openid", CALENDAR])
    assert await calendar_status(emulator, http, issued.token) == 200
    emulator.state.advance_clock(3599)
    assert await calendar_status(emulator, http, issued.token) == 401
    assert issued.refresh_token
    _, body = await refresh(emulator, http, issued.refresh_token)
    assert await calendar_status(emulator, http, body["access_token"]) == 200


async def test_unknown_refresh_token(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    assert await refresh(emulator, http, "1//nothing") == (
        400,
        {"error": "invalid_grant", "error_description": "Token has been expired or revoked."},
    )


async def test_scripted_rotation_replaces_the_refresh_token_once(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    issued = emulator.issue(ALICE)
    assert issued.refresh_token
    emulator.state.rotate_refresh_token_next(ALICE.email)
    _, rotated = await refresh(emulator, http, issued.refresh_token)
    new_token = rotated["refresh_token"]
    assert new_token != issued.refresh_token
    assert (await refresh(emulator, http, issued.refresh_token))[0] == 400
    status, body = await refresh(emulator, http, new_token)
    assert status == 200 and "refresh_token" not in body


async def test_refresh_with_another_clients_credentials_is_refused(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    emulator.state.add_client("other-client", "other-secret", [TEST_REDIRECT_URI])
    issued = emulator.issue(ALICE)
    assert issued.refresh_token
    status, body, _ = await post_token(
        emulator,
        http,
        grant_type="refresh_token",
        refresh_token=issued.refresh_token,
        client_id="other-client",
        client_secret="other-secret",
    )
    assert (status, body["error"]) == (400, "unauthorized_client")


async def test_hundred_and_first_refresh_token_invalidates_the_oldest(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    emulator.state.max_refresh_tokens_per_client = 3
    tokens = [emulator.issue(ALICE).refresh_token for _ in range(4)]
    assert all(tokens)
    assert (await refresh(emulator, http, str(tokens[0])))[0] == 400
    assert (await refresh(emulator, http, str(tokens[1])))[0] == 200


# -- revocation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["refresh", "access"])
@pytest.mark.parametrize("where", ["form", "query"])
async def test_revoking_either_token_kills_the_whole_grant(
    emulator: RunningEmulator, http: aiohttp.ClientSession, which: str, where: str
) -> None:
    issued = emulator.issue(ALICE, ["openid", CALENDAR])
    older = emulator.issue(ALICE, ["openid", CALENDAR])  # another consent of the same user
    assert issued.refresh_token and older.refresh_token
    token = issued.refresh_token if which == "refresh" else issued.token
    kwargs: dict[str, Any] = {"data": {"token": token}} if where == "form" else {}
    async with http.post(
        emulator.url("/revoke"), params={"token": token} if where == "query" else None, **kwargs
    ) as r:
        assert r.status == 200
    assert await calendar_status(emulator, http, issued.token) == 401
    assert await calendar_status(emulator, http, older.token) == 401
    assert (await refresh(emulator, http, issued.refresh_token))[1]["error"] == "invalid_grant"
    assert (await refresh(emulator, http, older.refresh_token))[0] == 400
    async with http.post(emulator.url("/revoke"), data={"token": token}) as r:
        assert r.status == 400
        assert await r.json() == {
            "error": "invalid_token",
            "error_description": "Token expired or revoked",
        }


async def test_revoking_an_unknown_token(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    async with http.post(emulator.url("/revoke"), data={"token": "ya29.nope"}) as r:
        assert r.status == 400
        assert (await r.json())["error"] == "invalid_token"


async def test_revocation_from_googles_side(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    issued = emulator.issue(ALICE, ["openid"])
    assert issued.refresh_token
    emulator.state.revoke_user_access(ALICE.email)
    assert [g.revoked_by for g in emulator.state.revoked_grants(ALICE.email)] == ["user"]
    assert await calendar_status(emulator, http, issued.token) == 401
    assert await refresh(emulator, http, issued.refresh_token) == (
        400,
        {"error": "invalid_grant", "error_description": "Token has been expired or revoked."},
    )


# -- userinfo -----------------------------------------------------------------------------------


async def test_userinfo_shows_what_the_scopes_allow(
    emulator: RunningEmulator, http: aiohttp.ClientSession
) -> None:
    def headers(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    with_email = emulator.token_for(ALICE, ["openid", "email"])
    async with http.get(emulator.url("/v1/userinfo"), headers=headers(with_email)) as r:
        assert await r.json() == {"sub": ALICE.sub, "email": ALICE.email, "email_verified": True}
    openid_only = emulator.token_for(ALICE, ["openid"])
    async with http.get(emulator.url("/v1/userinfo"), headers=headers(openid_only)) as r:
        assert await r.json() == {"sub": ALICE.sub}
    calendar_only = emulator.token_for(ALICE, [CALENDAR])
    async with http.get(emulator.url("/v1/userinfo"), headers=headers(calendar_only)) as r:
        assert r.status == 403
    async with http.get(emulator.url("/v1/userinfo"), headers=headers("ya29.bad")) as r:
        assert r.status == 401
        assert await r.json() == {
            "error": "invalid_request",
            "error_description": "Invalid Credentials",
        }
