"""Connecting a user's Google Calendar: the connect session and the OAuth callback.

    agent backend --POST /v1/connect-sessions--> create_session()  -> Google's consent URL
    user's browser --Google--> GET /oauth/google/callback --> complete_callback() -> return_url

The OAuth `state` is 256 random bits, stored only as its SHA-256, single-use (consumed before
anything else happens, so a replay finds it spent), and expires with the session. The PKCE
verifier lives in the session row until that one use.

Every callback that names a live session writes one audit entry (action `connect`, outcome `ok`
or the error code) with ids and codes only; Google's `error` parameter is recorded as one code
of a fixed vocabulary (`GOOGLE_ERROR_CODES`, else `other`), never as the text that came in.
A callback that names no live session (no state, an unknown one, or a replay of a spent one)
identifies nobody and can be repeated by anyone at will: it is counted in a metric
(`gateway_connect_callbacks_refused_total{reason}`) and logged at most once a minute, never
audited row by row. Tokens are sealed by the vault before they reach the database
and never leave this module in clear: not in logs, not in exceptions, not in the redirect.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from gateway.audit import AuditLog
from gateway.clock import utc_now
from gateway.connections.model import (
    OWNER_TAG_BYTES,
    Capability,
    Integration,
    Status,
    capabilities_for,
    excess_scopes,
    new_integration_id,
    new_owner_tag,
)
from gateway.connections.repository import ConnectSession, IntegrationRepository, SealedTokens
from gateway.connections.return_urls import canonical_return_url
from gateway.connections.sealing import seal_grant
from gateway.errors import InvalidInput, ProblemError
from gateway.google.oauth_client import TokenGrant, TokenRevoker
from gateway.google.oauth_flow import ExchangeFailed, GoogleIdentity, OAuthFlow, requested_scopes
from gateway.observability.metrics import CONNECT_CALLBACKS_REFUSED
from gateway.observability.throttle import LogThrottle
from gateway.settings import Settings
from vault.errors import InvalidCiphertext
from vault.service import Vault

log = logging.getLogger(__name__)

AUDIT_ACTION = "connect"
STATE_BYTES = 32  # 256 bits (the issue asks for at least 128)
VERIFIER_BYTES = 48  # 64 base64url characters (RFC 7636: 43-128)
SESSION_RETENTION = timedelta(days=1)  # after expiry
MAX_STATE_CHARS = 256  # ours are 43; anything much longer is not one of ours

# The error codes the browser may be sent back with (the `error` query parameter).
ACCESS_DENIED = "access_denied"
INSUFFICIENT_SCOPE = "insufficient_scope"
INVALID_STATE = "invalid_state"
EXPIRED_SESSION = "expired_session"
EXCHANGE_FAILED = "exchange_failed"
CALLBACK_ERRORS = (
    ACCESS_DENIED,
    INSUFFICIENT_SCOPE,
    INVALID_STATE,
    EXPIRED_SESSION,
    EXCHANGE_FAILED,
)
# What Google's `error` parameter may say on the redirect back (RFC 6749 4.1.2.1, OpenID
# Connect, and Google's own): recorded as is; anything else (the browser can send any text) is
# recorded as GOOGLE_ERROR_OTHER.
GOOGLE_ERROR_CODES = frozenset(
    {
        "access_denied",
        "invalid_request",
        "unauthorized_client",
        "unsupported_response_type",
        "invalid_scope",
        "server_error",
        "temporarily_unavailable",
        "interaction_required",
        "login_required",
        "account_selection_required",
        "consent_required",
        "admin_policy_enforced",
        "disallowed_useragent",
        "org_internal",
        "invalid_client",
        "redirect_uri_mismatch",
    }
)
GOOGLE_ERROR_OTHER = "other"
# At most one log line per this many seconds for callbacks that name no live session.
REFUSED_LOG_INTERVAL_S = 60.0


class GoogleNotConfigured(ProblemError):
    """No Google OAuth client is configured, so nobody can connect."""

    code = "google_not_configured"
    status = 503
    title = "Service Unavailable"


@dataclass(frozen=True)
class StartedSession:
    """What the agent's backend gets: where to send the user, and until when it works."""

    connect_url: str
    expires_at: datetime


@dataclass(frozen=True)
class CallbackOutcome:
    """Where to send the browser after a callback.

    `location` is the session's return_url with `status=connected&integration_id=...` or
    `status=error&error=<code>`, then `user_id` and the caller's `app_state` if it gave one.
    It is None when the state is unknown (no trustworthy place to send the browser: answer a
    plain error page with `error` instead).
    """

    location: str | None
    error: str | None = None
    integration_id: str | None = None


def state_digest(state: str) -> str:
    """How a state is looked up: its SHA-256, hex (the state itself is never stored)."""
    return hashlib.sha256(state.encode("utf-8", "replace")).hexdigest()


def google_error_code(raw: str) -> str:
    """Google's `error` parameter as one code of GOOGLE_ERROR_CODES, else `other`."""
    return raw if raw in GOOGLE_ERROR_CODES else GOOGLE_ERROR_OTHER


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def with_query(url: str, params: Mapping[str, str]) -> str:
    """`url` with `params` added to its query (its own parameters kept, ours replacing any of
    the same name so a return_url cannot pre-set `status`)."""
    parts = urlsplit(url)
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    return urlunsplit(parts._replace(query=urlencode([*kept, *params.items()])))


class ConnectService:
    """Creates connect sessions and completes OAuth callbacks.

    Dependencies come in as arguments: `flow` is None when Google is not configured (then
    `create_session` answers 503 google_not_configured); `revoker` undoes partial grants;
    `clock` and `token_bytes` make expiry and randomness testable.
    """

    def __init__(
        self,
        *,
        repository: IntegrationRepository,
        vault: Vault,
        audit: AuditLog,
        settings: Settings,
        flow: OAuthFlow | None,
        revoker: TokenRevoker | None,
        clock: Callable[[], datetime] = utc_now,
        token_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self._repo = repository
        self._vault = vault
        self._audit = audit
        self._settings = settings
        self._flow = flow
        self._revoker = revoker
        self._clock = clock
        self._token_bytes = token_bytes
        self._refused_log = LogThrottle(log, interval_s=REFUSED_LOG_INTERVAL_S, clock=clock)

    def __repr__(self) -> str:
        return f"ConnectService(configured={self._flow is not None})"

    # -- connect sessions ---------------------------------------------------------------------

    async def purge_expired_sessions(self) -> int:
        """Delete connect sessions expired for longer than SESSION_RETENTION: an abandoned one
        still holds a PKCE verifier and the login hint (an email). A day of grace keeps recently
        used states recognisable as spent (not unknown). Returns how many went."""
        return await self._repo.purge_sessions(self._clock() - SESSION_RETENTION)

    async def create_session(
        self,
        *,
        tenant_id: str,
        user_id: str,
        return_url: str,
        login_hint: str | None = None,
        app_state: str | None = None,
    ) -> StartedSession:
        """Start a connection for `user_id`: store a session, return Google's consent URL.

        `app_state` is the caller's opaque value, handed back with `user_id` on the final
        redirect so the app can check that the browser coming back is the one that started
        (login CSRF: a connect URL works from any browser until it expires).

        Raises GoogleNotConfigured (503) and InvalidInput (422, code return_url_not_allowed).
        """
        if self._flow is None:
            raise GoogleNotConfigured(
                "Google Calendar connections are not configured on this gateway "
                "(GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET)"
            )
        # Checked, stored and followed in one canonical form (no `..`, `%2e%2e`, `\\`, ...).
        canonical = canonical_return_url(return_url, self._settings.allowed_return_urls)
        if canonical is None:
            raise InvalidInput(
                "return_url: not an allowed return URL (see GATEWAY_ALLOWED_RETURN_URLS)",
                code="return_url_not_allowed",
                extra={"field": "return_url"},
            )
        # Housekeeping on the way (the app also runs it periodically: `purge_expired_sessions`).
        await self.purge_expired_sessions()
        now = self._clock()
        state = _b64url(self._token_bytes(STATE_BYTES))
        verifier = _b64url(self._token_bytes(VERIFIER_BYTES))
        expires_at = now + timedelta(seconds=self._settings.connect_session_ttl_s)
        await self._repo.insert_session(
            ConnectSession(
                state_sha256=state_digest(state),
                tenant_id=tenant_id,
                user_id=user_id,
                return_url=canonical,
                login_hint=login_hint,
                code_verifier=verifier,
                created_at=now,
                expires_at=expires_at,
                app_state=app_state,
            )
        )
        url = self._flow.authorization_url(
            state=state, code_verifier=verifier, login_hint=login_hint
        )
        return StartedSession(connect_url=url, expires_at=expires_at)

    # -- the OAuth callback -------------------------------------------------------------------

    async def complete_callback(self, query: Mapping[str, str]) -> CallbackOutcome:
        """Finish a connection from the query Google sent the browser back with.

        Never raises for anything the browser or Google sent: every failure is an outcome with
        one of CALLBACK_ERRORS (and an audit entry).
        """
        state = query.get("state", "")
        if not state or len(state) > MAX_STATE_CHARS:
            self._refused("missing_state" if not state else "unknown_state")
            return CallbackOutcome(None, INVALID_STATE)
        digest = state_digest(state)
        # Consumed first, whatever follows: a state works once, even if this attempt fails.
        session = await self._repo.consume_session(digest)
        if session is None:
            spent = await self._repo.find_session(digest)
            self._refused("spent_state" if spent else "unknown_state")
            # A spent state still names its own session's return_url (one the tenant chose
            # and we checked): safe to send the browser there, but without `user_id`: whoever
            # replays an old callback URL learns nothing. An unknown one names nothing.
            return (
                self._fail(spent, INVALID_STATE, identify=False)
                if spent
                else CallbackOutcome(None, INVALID_STATE)
            )

        now = self._clock()
        if now >= session.expires_at:
            return await self._refuse(session, EXPIRED_SESSION)
        if "error" in query:
            google_error = google_error_code(query["error"])
            code = ACCESS_DENIED if google_error == ACCESS_DENIED else EXCHANGE_FAILED
            return await self._refuse(session, code, google_error=google_error)
        code_param = query.get("code", "")
        if not code_param or self._flow is None:
            return await self._refuse(session, EXCHANGE_FAILED)

        try:
            tokens = await self._flow.exchange(code=code_param, code_verifier=session.code_verifier)
        except ExchangeFailed as exc:
            log.warning("connect: code exchange failed for tenant=%s: %s", session.tenant_id, exc)
            return await self._refuse(session, EXCHANGE_FAILED)

        if Capability.AVAILABILITY not in capabilities_for(tokens.granted_scopes):
            # The user unticked the calendar on Google's consent screen: nothing to keep.
            revoked = await self._revoke(tokens)
            return await self._refuse(session, INSUFFICIENT_SCOPE, revoked=revoked)

        try:
            identity = await self._flow.verify_identity(tokens)
        except ExchangeFailed as exc:
            log.warning("connect: identity not verified for tenant=%s: %s", session.tenant_id, exc)
            revoked = await self._revoke(tokens)
            return await self._refuse(session, EXCHANGE_FAILED, revoked=revoked)

        try:
            integration_id, reconnected = await self._store(session, identity, tokens, now)
        except Exception as exc:
            # The vault or the database failed with Google's tokens in hand. Their messages may
            # quote SQL parameters (an email, sealed bytes): log the type only, and give the
            # grant back rather than leave it dangling.
            log.error(
                "connect: storing failed for tenant=%s (%s)", session.tenant_id, type(exc).__name__
            )
            revoked = await self._revoke(tokens)
            return await self._refuse(session, EXCHANGE_FAILED, revoked=revoked)

        capabilities = capabilities_for(tokens.granted_scopes)
        detail: dict[str, str | bool] = {
            "capabilities": ",".join(c.value for c in capabilities),
            "reconnect": reconnected,
        }
        excess = excess_scopes(tokens.granted_scopes, requested_scopes(self._settings))
        if excess:
            # Google merged an earlier, broader grant into this one: kept (we cannot narrow a
            # grant, and refusing would leave the user's earlier grant in place anyway), shown
            # as `excess_scopes` in the integration's status and export, and audited here.
            detail["excess_scopes"] = " ".join(excess)
            log.warning(
                "connect: integration=%s holds scopes beyond those asked for: %s",
                integration_id,
                " ".join(excess),
            )
        await self._record("ok", session.tenant_id, integration_id=integration_id, detail=detail)
        log.info(
            "connect: tenant=%s integration=%s connected (reconnect=%s)",
            session.tenant_id,
            integration_id,
            reconnected,
        )
        return CallbackOutcome(
            with_query(
                session.return_url,
                {
                    "status": "connected",
                    "integration_id": integration_id,
                    **_identifies(session),
                },
            ),
            None,
            integration_id,
        )

    # -- internals ----------------------------------------------------------------------------

    async def _store(
        self,
        session: ConnectSession,
        identity: GoogleIdentity,
        tokens: TokenGrant,
        now: datetime,
    ) -> tuple[str, bool]:
        """Seal the tokens and store them on the same person's integration (a reconnect) or a
        new one. Returns (integration id, reconnected)."""
        existing = await self._repo.find_reconnectable(
            session.tenant_id, session.user_id, identity.sub
        )
        if existing is not None:
            try:
                sealed = await self._seal(session.tenant_id, existing.id, tokens, now)
            except InvalidCiphertext:
                # Its data key no longer opens (a backup restored after the key's KEK version
                # was retired): nothing sealed under it can be recovered, and the new tokens
                # replace the old ones anyway. A fresh key lets the user reconnect in place.
                log.warning(
                    "connect: integration=%s data key unopenable; replacing it", existing.id
                )
                await self._vault.destroy(session.tenant_id, existing.id)
                sealed = await self._seal(session.tenant_id, existing.id, tokens, now)
            if await self._repo.reconnect(
                existing.id,
                google_email=identity.email,
                granted_scopes=tokens.granted_scopes,
                tokens=sealed,
                now=now,
            ):
                return existing.id, True
            # A disconnect began meanwhile: that integration is going away; start afresh.
        if tokens.refresh_token is None:
            # Without one the connection would die within the hour. prompt=consent makes Google
            # send one, so this is Google misbehaving.
            raise _MissingRefreshToken()
        integration_id = new_integration_id(self._token_bytes(12))
        sealed = await self._seal(session.tenant_id, integration_id, tokens, now)
        await self._repo.insert(
            Integration(
                id=integration_id,
                tenant_id=session.tenant_id,
                user_id=session.user_id,
                status=Status.ACTIVE,
                google_sub=identity.sub,
                google_email=identity.email,
                granted_scopes=tokens.granted_scopes,
                created_at=now,
                updated_at=now,
                access_token_expires_at=sealed.access_token_expires_at,
                owner_tag=new_owner_tag(self._token_bytes(OWNER_TAG_BYTES)),
            ),
            sealed,
        )
        return integration_id, False

    async def _seal(
        self, tenant_id: str, integration_id: str, tokens: TokenGrant, now: datetime
    ) -> SealedTokens:
        await self._vault.ensure_data_key(tenant_id, integration_id)
        # The code was redeemed moments before `now`: the lifetime counts from then.
        return await seal_grant(
            self._vault, tenant_id, integration_id, tokens, expires_at=tokens.expires_at(now)
        )

    async def _revoke(self, tokens: TokenGrant) -> bool:
        """Undo a grant we will not keep. Revoking the refresh token (or, without one, the
        access token) revokes the whole grant. A failure is logged, never raised: the user's
        answer is the same either way."""
        if self._revoker is None:
            return False
        try:
            await self._revoker.revoke(tokens.refresh_token or tokens.access_token)
        except Exception as exc:  # GoogleError, or anything else: the callback must answer
            log.warning("connect: revoking a refused grant failed (%s)", type(exc).__name__)
            return False
        return True

    async def _refuse(
        self, session: ConnectSession, code: str, **detail: str | bool
    ) -> CallbackOutcome:
        await self._record(code, session.tenant_id, detail=detail)
        log.info("connect: tenant=%s refused: %s", session.tenant_id, code)
        return self._fail(session, code)

    def _refused(self, reason: str) -> None:
        """A callback that names no live session: counted, logged now and then, not audited."""
        CONNECT_CALLBACKS_REFUSED.labels(reason=reason).inc()
        self._refused_log.event("connect: callback refused: %s", reason)

    @staticmethod
    def _fail(session: ConnectSession, code: str, *, identify: bool = True) -> CallbackOutcome:
        params = {"status": "error", "error": code}
        if identify:
            params.update(_identifies(session))
        return CallbackOutcome(with_query(session.return_url, params), code)

    async def _record(
        self,
        outcome: str,
        tenant_id: str | None,
        *,
        integration_id: str | None = None,
        detail: Mapping[str, str | bool] | None = None,
    ) -> None:
        await self._audit.record(
            AUDIT_ACTION,
            outcome,
            tenant_id=tenant_id,
            integration_id=integration_id,
            detail=detail or None,
        )


def _identifies(session: ConnectSession) -> dict[str, str]:
    """What the final redirect tells the app about whose session this was: `user_id`, and the
    caller's `app_state` if it gave one."""
    found = {"user_id": session.user_id}
    if session.app_state is not None:
        found["app_state"] = session.app_state
    return found


class _MissingRefreshToken(Exception):
    """Google granted a new connection without a refresh token."""
