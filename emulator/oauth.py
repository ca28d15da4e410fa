"""Google's OAuth 2.0 / OpenID Connect endpoints, as strict as the real ones on the wire.

Paths mirror Google's (the host differs): `GET /o/oauth2/v2/auth` (the scripted user
consents, refuses or grants part, and the endpoint answers the 302 at once; a user whose consent
is `ask` gets an HTML consent screen instead, one checkbox per scope, Allow and Cancel, posting
to `POST /o/oauth2/v2/consent`, for a real browser), `POST /token`,
`POST /revoke`, `GET /v1/userinfo` (also `/oauth2/v3/userinfo`), `GET /oauth2/v3/certs` (JWKS),
`GET /oauth2/v1/certs` (PEM certificates, what google-auth verifies with) and
`GET /.well-known/openid-configuration`.

Error wordings are Google's, from `shared/reference/google-wire.md`. Where Google shows the user
an error page instead of redirecting (unknown client, unregistered redirect_uri), the emulator
answers that page itself with the Google error code in its text and `X-Emulator-Error` header.

Google also adds the URL forms of `email`/`profile` to the granted `scope`, which makes oauthlib
complain "Scope has changed" unless the client asked for the URL forms or relaxes the check; the
emulator does the same so a gateway that trips on it does so here first.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from aiohttp import web

from emulator.errors import OAuthError
from emulator.routing import ENDPOINT_NAMERS_KEY
from emulator.signing import b64url
from emulator.state import (
    EMAIL_SCOPES,
    SIGN_IN_SCOPES,
    AuthCode,
    EmulatorState,
    Grant,
    OAuthClient,
    UnknownUser,
)

AUTHORIZE_PATH = "/o/oauth2/v2/auth"
# Where the consent screen's form posts (Google's own is elsewhere; only a browser sees it).
CONSENT_PATH = "/o/oauth2/v2/consent"
TOKEN_PATH = "/token"  # noqa: S105 - a path
REVOKE_PATH = "/revoke"
USERINFO_PATHS = ("/v1/userinfo", "/oauth2/v3/userinfo")
JWKS_PATH = "/oauth2/v3/certs"
PEM_CERTS_PATH = "/oauth2/v1/certs"
OPENID_CONFIG_PATH = "/.well-known/openid-configuration"

NO_STORE = {
    "Cache-Control": "no-cache, no-store, max-age=0, must-revalidate",
    "Pragma": "no-cache",
}
# Google answers sign-in scopes in their URL form whatever spelling was asked.
_SCOPE_ALIASES = {
    "email": "https://www.googleapis.com/auth/userinfo.email",
    "profile": "https://www.googleapis.com/auth/userinfo.profile",
}
PROFILE_SCOPES = frozenset({"profile", "https://www.googleapis.com/auth/userinfo.profile"})
_PROMPTS = frozenset({"none", "consent", "select_account"})
# RFC 7636: verifier and challenge are 43-128 unreserved characters.
_PKCE_CHARS = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
ID_TOKEN_LIFETIME_S = 3600


# Endpoint names (what faults and the request log match on) by path.
ENDPOINT_NAMES = {
    AUTHORIZE_PATH: "authorize",
    CONSENT_PATH: "consent",
    TOKEN_PATH: "token",
    REVOKE_PATH: "revoke",
    **dict.fromkeys(USERINFO_PATHS, "userinfo"),
    JWKS_PATH: "certs",
    PEM_CERTS_PATH: "certs",
    OPENID_CONFIG_PATH: "openid-config",
}

OAuthHandler = Callable[[web.Request, EmulatorState], Awaitable[web.StreamResponse]]


def setup(app: web.Application, state: EmulatorState) -> None:
    """Add the OAuth routes and name them for faults and the request log."""

    def bind(fn: OAuthHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await fn(request, state)

        return handle

    app.router.add_get(AUTHORIZE_PATH, bind(authorize))
    app.router.add_post(CONSENT_PATH, bind(consent))
    app.router.add_post(TOKEN_PATH, bind(token))
    app.router.add_post(REVOKE_PATH, bind(revoke))
    for path in USERINFO_PATHS:
        app.router.add_get(path, bind(userinfo))
        app.router.add_post(path, bind(userinfo))
    app.router.add_get(JWKS_PATH, bind(jwks))
    app.router.add_get(PEM_CERTS_PATH, bind(pem_certs))
    app.router.add_get(OPENID_CONFIG_PATH, bind(openid_configuration))
    app[ENDPOINT_NAMERS_KEY].append(lambda request: ENDPOINT_NAMES.get(request.path))


# -- helpers ------------------------------------------------------------------------------


def normalise_scopes(scopes: frozenset[str]) -> frozenset[str]:
    """Add the URL form of each short sign-in scope, as Google's granted `scope` does (seen in
    real redirects: `email profile ... userinfo.email userinfo.profile openid`)."""
    return scopes | frozenset(_SCOPE_ALIASES[s] for s in scopes if s in _SCOPE_ALIASES)


def scope_string(scopes: frozenset[str]) -> str:
    return " ".join(sorted(scopes))


def _error_page(status: int, error: str, detail: str) -> web.Response:
    """The page Google shows the user when it cannot safely redirect back to the client."""
    error, detail = html.escape(error), html.escape(detail)
    body = (
        f"<!doctype html><html><head><title>Error {status}: {error}</title></head><body>"
        f"<h1>Access blocked: Authorization Error</h1><p>Error {status}: {error}</p>"
        f"<p>{detail}</p></body></html>"
    )
    return web.Response(
        status=status, text=body, content_type="text/html", headers={"X-Emulator-Error": error}
    )


def _redirect(redirect_uri: str, params: dict[str, str]) -> web.Response:
    parts = urlsplit(redirect_uri)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    location = urlunsplit(parts._replace(query=urlencode(query)))
    return web.Response(status=302, headers={"Location": location, **NO_STORE})


async def _form(request: web.Request) -> dict[str, str]:
    """Form (or JSON) body fields, falling back to the query string for absent ones."""
    fields: dict[str, str] = dict(request.query)
    if request.content_type == "application/json":
        try:
            data = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise OAuthError(400, "invalid_request", "Invalid JSON payload received.") from None
        if isinstance(data, dict):
            fields.update({k: str(v) for k, v in data.items()})
    elif request.body_exists:
        # post() caches the parsed form (the fault middleware may have read it already).
        fields.update({k: str(v) for k, v in (await request.post()).items()})
    return fields


def _token_response(payload: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(payload, indent=2),
        content_type="application/json",
        charset="utf-8",
        headers=NO_STORE,
    )


# -- authorization endpoint ---------------------------------------------------------------


async def authorize(request: web.Request, state: EmulatorState) -> web.Response:
    """Validate like Google, then let the scripted user decide and redirect at once."""
    q = request.query
    client_id = q.get("client_id", "")
    if not client_id:
        return _error_page(400, "invalid_request", "Missing required parameter: client_id")
    client = state.clients.get(client_id)
    if client is None:
        return _error_page(401, "invalid_client", "The OAuth client was not found.")
    redirect_uri = q.get("redirect_uri", "")
    if not redirect_uri:
        return _error_page(400, "invalid_request", "Missing required parameter: redirect_uri")
    if redirect_uri not in client.redirect_uris:
        return _error_page(
            400,
            "redirect_uri_mismatch",
            f"You can't sign in to this app because it doesn't comply with Google's OAuth 2.0 "
            f"policy. redirect_uri={redirect_uri}",
        )
    response_type = q.get("response_type", "")
    if not response_type:
        return _error_page(400, "invalid_request", "Required parameter is missing: response_type")

    echo = {"state": q["state"]} if "state" in q else {}

    def refuse(error: str, description: str | None = None) -> web.Response:
        params = {"error": error, **({"error_description": description} if description else {})}
        return _redirect(redirect_uri, {**params, **echo})

    if response_type != "code":
        return refuse("unsupported_response_type", f"Invalid response_type: {response_type}")
    requested = frozenset(q.get("scope", "").split())
    if not requested:
        return refuse("invalid_request", "Missing required parameter: scope")
    prompts = frozenset(q.get("prompt", "").split())
    if not prompts <= _PROMPTS or ("none" in prompts and len(prompts) > 1):
        return refuse("invalid_request", f"Invalid prompt: {q.get('prompt', '')}")
    access_type = q.get("access_type", "online")
    if access_type not in ("online", "offline"):
        return refuse("invalid_request", f"Invalid access_type: {access_type}")
    challenge = q.get("code_challenge")
    method = q.get("code_challenge_method")
    if method is not None and challenge is None:
        return refuse("invalid_request", "Missing required parameter: code_challenge")
    if challenge is not None:
        method = method or "plain"
        if method not in ("S256", "plain"):
            return refuse("invalid_request", f"Invalid code_challenge_method: {method}")
        if not _PKCE_CHARS.match(challenge):
            return refuse("invalid_request", "Invalid code_challenge.")

    hint = q.get("login_hint")
    try:
        user = state.find_user(hint) if hint else state.default_user()
    except UnknownUser:
        user = None
    if user is None:
        # Google would show its sign-in page; the emulator has no one to sign in as.
        return _error_page(400, "invalid_request", "Emulator: no scripted user matches login_hint")

    requested = normalise_scopes(requested)
    already = state.granted_scopes(user.sub, client.client_id)
    if "none" in prompts:
        if not requested <= already:
            return refuse("consent_required")
        granted = requested
    elif "consent" not in prompts and requested <= already:
        granted = requested  # nothing new to ask: Google skips the consent screen
    elif user.consent == "deny":
        return refuse("access_denied")
    elif user.consent == "partial":
        granted = requested & normalise_scopes(user.partial_scopes | SIGN_IN_SCOPES)
    else:
        granted = requested
    asked = _AuthRequest(
        client_id=client.client_id,
        redirect_uri=redirect_uri,
        sub=user.sub,
        requested=requested,
        already=already,
        echo=echo,
        offline=access_type == "offline",
        force_consent="consent" in prompts,
        code_challenge=challenge,
        code_challenge_method=method if challenge is not None else None,
        nonce=q.get("nonce"),
        include_granted=q.get("include_granted_scopes") == "true" or state.merge_earlier_grants,
    )
    if user.consent == "ask" and ("consent" in prompts or not requested <= already):
        consent_id = state.new_token("consent-", 16)
        state.pending_consents[consent_id] = (asked, state.clock() + CONSENT_PAGE_LIFETIME_S)
        return _consent_page(consent_id, user.email, client.client_id, requested)
    return _issue_code(state, asked, granted)


@dataclass(frozen=True)
class _AuthRequest:
    """A validated authorization request, kept while the user looks at the consent screen."""

    client_id: str
    redirect_uri: str
    sub: str
    requested: frozenset[str]
    already: frozenset[str]
    echo: dict[str, str]
    offline: bool
    force_consent: bool
    code_challenge: str | None
    code_challenge_method: str | None
    nonce: str | None
    include_granted: bool


def _issue_code(state: EmulatorState, asked: _AuthRequest, granted: frozenset[str]) -> web.Response:
    """The user agreed to `granted`: a code, and the redirect back to the client."""
    if asked.include_granted:
        granted |= asked.already
    code = AuthCode(
        code=state.new_token("4/0Aemu", 24),
        client_id=asked.client_id,
        redirect_uri=asked.redirect_uri,
        sub=asked.sub,
        scopes=granted,
        offline=asked.offline,
        force_consent=asked.force_consent,
        code_challenge=asked.code_challenge,
        code_challenge_method=asked.code_challenge_method,
        nonce=asked.nonce,
        expires_at=state.clock() + state.auth_code_lifetime_s,
    )
    state.auth_codes[code.code] = code
    new_consent = asked.force_consent or not asked.requested <= asked.already
    return _redirect(
        asked.redirect_uri,
        {
            **asked.echo,
            "code": code.code,
            "scope": scope_string(granted),
            "authuser": "0",
            "prompt": "consent" if new_consent else "none",
        },
    )


# -- the consent screen (users whose consent is "ask": a person decides in a browser) ------

CONSENT_PAGE_LIFETIME_S = 600

# What Google's granular consent screen says for each scope the gateway may ask for.
_SCOPE_TEXT = {
    "https://www.googleapis.com/auth/calendar.events.freebusy": (
        "See the availability on calendars you have access to"
    ),
    "https://www.googleapis.com/auth/calendar.freebusy": (
        "See the availability on calendars you have access to"
    ),
    "https://www.googleapis.com/auth/calendar.events.owned": (
        "See, create, change, and delete events on Google calendars you own"
    ),
    "https://www.googleapis.com/auth/calendar.events": (
        "View and edit events on all your calendars"
    ),
    "https://www.googleapis.com/auth/calendar": (
        "See, edit, share, and permanently delete all the calendars you can access"
    ),
}


def _consent_page(
    consent_id: str, email: str, client_id: str, requested: frozenset[str]
) -> web.Response:
    """Google's granular consent screen, reduced to what a test drives: the account, the app,
    one checkbox per scope the user may untick (sign-in scopes are not offered), Allow and
    Cancel."""
    boxes = "".join(
        f'<li><label><input type="checkbox" name="scope" value="{html.escape(scope)}" '
        f'id="scope-{n}" checked> {html.escape(_SCOPE_TEXT.get(scope, scope))}</label></li>'
        for n, scope in enumerate(sorted(requested - SIGN_IN_SCOPES))
    )
    body = (
        "<!doctype html><html><head><meta charset=utf-8>"
        "<title>Sign in - Google Accounts</title><style>"
        "body{font-family:sans-serif;max-width:40em;margin:3em auto}"
        "li{list-style:none;margin:.6em 0}button{margin-right:1em;padding:.5em 1.5em}"
        "</style></head><body>"
        f"<h1>{html.escape(client_id)} wants access to your Google Account</h1>"
        f'<p id="account">{html.escape(email)}</p>'
        "<p>Select what this app can access:</p>"
        f'<form method="post" action="{CONSENT_PATH}">'
        f'<input type="hidden" name="consent_id" value="{html.escape(consent_id)}">'
        f"<ul>{boxes}</ul>"
        '<button type="submit" name="action" value="cancel" id="cancel">Cancel</button>'
        '<button type="submit" name="action" value="allow" id="allow">Allow</button>'
        "</form></body></html>"
    )
    return web.Response(text=body, content_type="text/html", headers=NO_STORE)


async def consent(request: web.Request, state: EmulatorState) -> web.Response:
    """The consent screen's form: Allow with the ticked scopes, or Cancel."""
    form = await request.post()
    pending = state.pending_consents.pop(str(form.get("consent_id", "")), None)
    if pending is None or pending[1] < state.clock():
        return _error_page(400, "invalid_request", "This consent screen has expired.")
    asked = pending[0]
    assert isinstance(asked, _AuthRequest)
    if form.get("action") != "allow":
        return _redirect(asked.redirect_uri, {"error": "access_denied", **asked.echo})
    ticked = normalise_scopes(frozenset(str(v) for v in form.getall("scope", [])))
    return _issue_code(state, asked, asked.requested & (ticked | SIGN_IN_SCOPES))


# -- token endpoint -----------------------------------------------------------------------


def _client_credentials(request: web.Request, form: dict[str, str]) -> tuple[str, str | None]:
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Basic "):
        try:
            decoded = base64.b64decode(auth.removeprefix("Basic ").strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise OAuthError(400, "invalid_request", "Bad Request") from None
        user, _, password = decoded.partition(":")
        return unquote(user), unquote(password)
    return form.get("client_id", ""), form.get("client_secret")


def _authenticate_client(
    request: web.Request, form: dict[str, str], state: EmulatorState
) -> OAuthClient:
    client_id, secret = _client_credentials(request, form)
    if not client_id:
        raise OAuthError(400, "invalid_request", "Could not determine client ID from request.")
    client = state.clients.get(client_id)
    if client is None:
        raise OAuthError(401, "invalid_client", "The OAuth client was not found.")
    if not secret:
        raise OAuthError(400, "invalid_request", "client_secret is missing.")
    if secret != client.client_secret:
        raise OAuthError(401, "invalid_client", "Unauthorized")
    return client


def _require(form: dict[str, str], name: str) -> str:
    value = form.get(name, "")
    if not value:
        raise OAuthError(400, "invalid_request", f"Missing required parameter: {name}")
    return value


def _verify_pkce(code: AuthCode, verifier: str | None) -> None:
    if code.code_challenge is None:
        if verifier:
            # Reported Google behaviour: a verifier without a challenge is refused.
            raise OAuthError(400, "invalid_grant", "code_verifier or verifier is not needed.")
        return
    if not verifier:
        raise OAuthError(400, "invalid_grant", "Missing code verifier.")
    if code.code_challenge_method == "S256":
        expected = b64url(hashlib.sha256(verifier.encode("ascii", "replace")).digest())
    else:
        expected = verifier
    if not _PKCE_CHARS.match(verifier) or expected != code.code_challenge:
        raise OAuthError(400, "invalid_grant", "Invalid code verifier.")


def _id_token(state: EmulatorState, grant: Grant, access_token: str, nonce: str | None) -> str:
    user = state.users[grant.sub]
    now = int(state.clock())
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    claims: dict[str, Any] = {
        "iss": state.issuer,
        "azp": grant.client_id,
        "aud": grant.client_id,
        "sub": user.sub,
        "at_hash": b64url(digest[:16]),
        "iat": now,
        "exp": now + ID_TOKEN_LIFETIME_S,
    }
    if grant.scopes & EMAIL_SCOPES:
        claims["email"] = user.email
        claims["email_verified"] = user.email_verified
    if grant.scopes & PROFILE_SCOPES and user.name:
        claims["name"] = user.name
    if nonce:
        claims["nonce"] = nonce
    return state.signing_key.sign_jwt(claims)


def _grant_payload(
    state: EmulatorState, grant: Grant, refresh_token: str | None, nonce: str | None = None
) -> dict[str, Any]:
    access = state.issue_access_token(grant)
    payload: dict[str, Any] = {
        "access_token": access.token,
        "expires_in": state.access_token_lifetime_s,
    }
    if refresh_token:
        payload["refresh_token"] = refresh_token
    payload["scope"] = scope_string(grant.scopes)
    payload["token_type"] = "Bearer"  # noqa: S105 - not a secret
    if "openid" in grant.scopes:
        payload["id_token"] = _id_token(state, grant, access.token, nonce)
    return payload


async def token(request: web.Request, state: EmulatorState) -> web.Response:
    form = await _form(request)
    grant_type = form.get("grant_type", "")
    if grant_type not in ("authorization_code", "refresh_token"):
        raise OAuthError(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")
    client = _authenticate_client(request, form, state)
    if grant_type == "authorization_code":
        return _token_response(_exchange_code(form, client, state))
    return _token_response(_refresh(form, client, state))


def _exchange_code(
    form: dict[str, str], client: OAuthClient, state: EmulatorState
) -> dict[str, Any]:
    raw_code = _require(form, "code")
    redirect_uri = _require(form, "redirect_uri")
    code = state.auth_codes.get(raw_code)
    if code is None:
        raise OAuthError(400, "invalid_grant", "Malformed auth code.")
    if code.used or code.expires_at <= state.clock() or code.client_id != client.client_id:
        raise OAuthError(400, "invalid_grant", "Bad Request")
    if redirect_uri != code.redirect_uri:
        raise OAuthError(400, "redirect_uri_mismatch", "Bad Request")
    _verify_pkce(code, form.get("code_verifier"))
    code.used = True
    # Without prompt=consent, a user who already has a live refresh token for this client gets
    # no new one: the gateway must keep the first.
    has_refresh = any(g.refresh_token for g in state.active_grants(code.sub, client.client_id))
    give_refresh = code.offline and (code.force_consent or not has_refresh)
    grant = state.create_grant(
        code.sub, client.client_id, code.scopes, with_refresh_token=give_refresh
    )
    return _grant_payload(state, grant, grant.refresh_token, code.nonce)


def _refresh(form: dict[str, str], client: OAuthClient, state: EmulatorState) -> dict[str, Any]:
    refresh_token = _require(form, "refresh_token")
    grant = state.grant_for_refresh_token(refresh_token)
    if grant is None:
        raise OAuthError(400, "invalid_grant", "Token has been expired or revoked.")
    if grant.client_id != client.client_id:
        raise OAuthError(400, "unauthorized_client", "Unauthorized")
    new_refresh = state.rotate_refresh_token(grant) if state.take_rotation(grant.sub) else None
    return _grant_payload(state, grant, new_refresh)


# -- revocation, userinfo, keys -----------------------------------------------------------


async def revoke(request: web.Request, state: EmulatorState) -> web.Response:
    form = await _form(request)
    raw = _require(form, "token")
    grant = state.grant_for_token(raw)
    access = state.access_tokens.get(raw)
    if (
        grant is None
        or grant.revoked
        or (access is not None and access.expires_at <= state.clock())
    ):
        raise OAuthError(400, "invalid_token", "Token expired or revoked")
    state.revoke_grant_family(grant, by="revoke_endpoint")
    return web.Response(status=200, text="{}", content_type="application/json", headers=NO_STORE)


async def userinfo(request: web.Request, state: EmulatorState) -> web.Response:
    auth = request.headers.get("Authorization", "")
    access = (
        state.access_tokens.get(auth.removeprefix("Bearer ").strip())
        if auth.startswith("Bearer ")
        else None
    )
    grant = state.grants.get(access.grant_id) if access else None
    if access is None or grant is None or grant.revoked or access.expires_at <= state.clock():
        raise _userinfo_error(401, "invalid_request", "Invalid Credentials")
    if not grant.scopes & (SIGN_IN_SCOPES):
        raise _userinfo_error(
            403, "insufficient_scope", "Request had insufficient authentication scopes."
        )
    user = state.users[grant.sub]
    body: dict[str, Any] = {"sub": user.sub}
    if grant.scopes & PROFILE_SCOPES and user.name:
        body["name"] = user.name
    if grant.scopes & EMAIL_SCOPES:
        body["email"] = user.email
        body["email_verified"] = user.email_verified
    return web.json_response(body, headers=NO_STORE)


class _UserinfoError(OAuthError):
    def to_response(self) -> web.Response:
        response = super().to_response()
        response.headers["WWW-Authenticate"] = (
            f'Bearer realm="https://accounts.google.com/", error="{self.error}"'
        )
        return response


def _userinfo_error(status: int, error: str, description: str) -> OAuthError:
    return _UserinfoError(status, error, description)


async def jwks(request: web.Request, state: EmulatorState) -> web.Response:
    return web.json_response(state.signing_key.jwks())


async def pem_certs(request: web.Request, state: EmulatorState) -> web.Response:
    return web.json_response(state.signing_key.pem_certs())


async def openid_configuration(request: web.Request, state: EmulatorState) -> web.Response:
    base = f"{request.scheme}://{request.host}"
    return web.json_response(
        {
            "issuer": state.issuer,
            "authorization_endpoint": base + AUTHORIZE_PATH,
            "token_endpoint": base + TOKEN_PATH,
            "userinfo_endpoint": base + USERINFO_PATHS[0],
            "revocation_endpoint": base + REVOKE_PATH,
            "jwks_uri": base + JWKS_PATH,
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "code_challenge_methods_supported": ["plain", "S256"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
        }
    )
