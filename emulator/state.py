"""The emulator's in-memory world: clients, users, grants and access tokens.

Time comes from an injectable `clock` (seconds since the epoch) and randomness from `token_bytes`,
so tests can expire tokens without sleeping. Whatever `clock` is given is wrapped in an
`EmulatorClock`, whose offset the control API can move even when the source is real time.
Calendar data lives in `calendars` (see `emulator/calendar_store.py`); the OAuth wire behaviour in
`emulator/oauth.py`, faults in `emulator/faults.py`, the request log in `emulator/inspection.py`.

Model: a `Grant` is what one code exchange (or one direct `issue_tokens` call) produced: the
scopes really granted and at most one live refresh token. A user's access for a client is the set
of their unrevoked grants for it; revoking any token of one of them revokes all of them, as
Google does when a user (or the app) removes access.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from emulator.calendar_store import CalendarStore
from emulator.errors import insufficient_scope, invalid_credentials
from emulator.faults import Fault, FaultInjector
from emulator.inspection import Inspector
from emulator.signing import SigningKey

ConsentMode = Literal["grant", "deny", "partial", "ask"]
CONSENT_MODES: tuple[ConsentMode, ...] = ("grant", "deny", "partial", "ask")

CALENDAR_SCOPES_READ = frozenset(
    {
        "https://www.googleapis.com/auth/calendar",
        "https://www.googleapis.com/auth/calendar.readonly",
        "https://www.googleapis.com/auth/calendar.events",
        "https://www.googleapis.com/auth/calendar.events.readonly",
        "https://www.googleapis.com/auth/calendar.events.owned",
        "https://www.googleapis.com/auth/calendar.events.owned.readonly",
        "https://www.googleapis.com/auth/calendar.events.freebusy",
        "https://www.googleapis.com/auth/calendar.freebusy",
    }
)

# Sign-in scopes survive granular consent: the consent screen only lets a user untick the others.
SIGN_IN_SCOPES = frozenset(
    {
        "openid",
        "email",
        "profile",
        "https://www.googleapis.com/auth/userinfo.email",
        "https://www.googleapis.com/auth/userinfo.profile",
    }
)
EMAIL_SCOPES = frozenset({"email", "https://www.googleapis.com/auth/userinfo.email"})

# Google keeps at most this many live refresh tokens per user and client; the oldest goes silently.
MAX_REFRESH_TOKENS_PER_CLIENT = 100


class EmulatorClock:
    """A clock reading `source()` plus an offset the control API can move.

    With a frozen source (tests) `set()` is exact; with real time the emulator's clock keeps
    ticking from the value set, which is what a long-running standalone emulator needs.
    """

    def __init__(self, source: Callable[[], float] = time.time) -> None:
        self._source = source
        self.offset_s = 0.0

    def __call__(self) -> float:
        return self._source() + self.offset_s

    def advance(self, seconds: float) -> float:
        """Move time forward (or back, if negative) by `seconds`; return the new now."""
        self.offset_s += seconds
        return self()

    def set(self, epoch_s: float) -> float:
        """Make now equal `epoch_s` (seconds since the epoch); return it."""
        self.offset_s = epoch_s - self._source()
        return self()


@dataclass
class OAuthClient:
    client_id: str
    client_secret: str
    redirect_uris: list[str]

    def __repr__(self) -> str:
        return f"OAuthClient(client_id={self.client_id!r})"


@dataclass
class User:
    """A scripted Google account. `consent` says what the authorization endpoint does for it:
    grant everything asked, deny (`access_denied`), grant only `partial_scopes` of what was
    asked (granular consent; sign-in scopes are always kept), or `ask`: no scripted decision,
    an HTML consent screen where a person (a browser test) decides."""

    sub: str
    email: str
    consent: ConsentMode = "grant"
    partial_scopes: frozenset[str] = frozenset()
    time_zone: str = "UTC"
    name: str = ""
    email_verified: bool = True


@dataclass
class Grant:
    """What one consent produced: the scopes really granted and its refresh token (None when
    access_type was online, or when Google gives no new refresh token)."""

    grant_id: str
    sub: str
    client_id: str
    scopes: frozenset[str]
    refresh_token: str | None = None
    revoked: bool = False
    created_at: float = 0.0
    revoked_at: float | None = None
    revoked_by: str | None = None  # "revoke_endpoint", "user" (control API), ...
    # Refresh tokens this grant held before a rotation or the 100-token limit dropped them.
    retired_refresh_tokens: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"Grant(grant_id={self.grant_id!r}, sub={self.sub!r}, revoked={self.revoked})"


@dataclass
class AccessToken:
    token: str
    grant_id: str
    expires_at: float

    def __repr__(self) -> str:
        return f"AccessToken(grant_id={self.grant_id!r}, expires_at={self.expires_at})"


@dataclass
class AuthCode:
    """An authorization code waiting for its single exchange."""

    code: str
    client_id: str
    redirect_uri: str
    sub: str
    scopes: frozenset[str]
    offline: bool
    force_consent: bool
    code_challenge: str | None
    code_challenge_method: str | None
    nonce: str | None
    expires_at: float
    used: bool = False

    def __repr__(self) -> str:
        return f"AuthCode(client_id={self.client_id!r}, sub={self.sub!r}, used={self.used})"


@dataclass
class IssuedTokens:
    """What the token endpoint answers for a code exchange (id_token added by oauth.py)."""

    access_token: AccessToken
    grant: Grant
    refresh_token: str | None

    @property
    def token(self) -> str:
        return self.access_token.token

    def __repr__(self) -> str:
        return f"IssuedTokens(grant={self.grant!r})"


@dataclass
class Caller:
    """Who a Calendar API request is from, after bearer authentication."""

    user: User
    grant: Grant


class UnknownUser(LookupError):
    """No scripted user has that sub or email."""


@dataclass
class EmulatorState:
    clock: Callable[[], float] = time.time
    token_bytes: Callable[[int], bytes] = secrets.token_bytes
    access_token_lifetime_s: int = 3599
    auth_code_lifetime_s: int = 600
    clients: dict[str, OAuthClient] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)  # by sub
    grants: dict[str, Grant] = field(default_factory=dict)  # by grant_id
    refresh_index: dict[str, str] = field(default_factory=dict)  # refresh token -> grant_id
    access_tokens: dict[str, AccessToken] = field(default_factory=dict)
    auth_codes: dict[str, AuthCode] = field(default_factory=dict)
    # Consent screens shown and not yet answered: id -> (the request, expiry). The request's
    # type belongs to emulator/oauth.py, which this module does not import.
    pending_consents: dict[str, tuple[object, float]] = field(default_factory=dict)
    calendars: CalendarStore = field(default_factory=CalendarStore)
    faults: FaultInjector = field(default_factory=FaultInjector)
    inspector: Inspector = field(default_factory=Inspector)
    # sub of the user the authorization endpoint picks without a login_hint (else the first user).
    default_user_sub: str | None = None
    # sub (or "*" for anyone) -> how many upcoming refreshes return a new refresh token.
    rotate_next_refresh: dict[str, int] = field(default_factory=dict)
    max_refresh_tokens_per_client: int = MAX_REFRESH_TOKENS_PER_CLIENT
    # None: refresh tokens live until revoked. 604800 mimics an External app in "Testing" status.
    refresh_token_lifetime_s: int | None = None
    # True: the authorization endpoint adds the scopes the user already granted this client even
    # without include_granted_scopes=true. Google's consent does this for some accounts (the
    # earlier grant is merged into the new one); a client must not assume its token holds only
    # what it asked for. Never more than was really granted before.
    merge_earlier_grants: bool = False
    # id_token `iss`: Google's, so google-auth's verify_oauth2_token accepts emulator tokens.
    issuer: str = "https://accounts.google.com"
    signing_key: SigningKey = field(default_factory=SigningKey)

    def __post_init__(self) -> None:
        if not isinstance(self.clock, EmulatorClock):
            self.clock = EmulatorClock(self.clock)
        self._clock: EmulatorClock = self.clock
        # The calendar store stamps `updated` and expires sync tokens on the same clock.
        self.calendars.clock = self.clock

    def __repr__(self) -> str:
        return f"EmulatorState(clients={len(self.clients)}, users={len(self.users)})"

    # -- time -----------------------------------------------------------------------------

    def advance_clock(self, seconds: float) -> float:
        """Move the emulator's time forward by `seconds` (tokens and codes expire accordingly)."""
        return self._clock.advance(seconds)

    def set_clock(self, epoch_s: float) -> float:
        """Make the emulator's now `epoch_s` seconds since the epoch."""
        return self._clock.set(epoch_s)

    @property
    def clock_offset_s(self) -> float:
        return self._clock.offset_s

    # -- scripting ------------------------------------------------------------------------

    def new_token(self, prefix: str, nbytes: int = 32) -> str:
        """A fresh opaque token. Prefixes mimic Google's shapes (`ya29.`, `1//`)."""
        return prefix + self.token_bytes(nbytes).hex()

    def add_client(
        self, client_id: str, client_secret: str, redirect_uris: Iterable[str]
    ) -> OAuthClient:
        """Register (or replace) an OAuth client."""
        client = OAuthClient(client_id, client_secret, list(redirect_uris))
        self.clients[client_id] = client
        return client

    def add_user(
        self,
        sub: str,
        email: str,
        *,
        consent: ConsentMode = "grant",
        partial_scopes: Iterable[str] = (),
        time_zone: str = "UTC",
        name: str = "",
    ) -> User:
        """Create (or replace) a scripted user."""
        if consent not in CONSENT_MODES:
            raise ValueError(f"consent must be one of {CONSENT_MODES}")
        user = User(sub, email, consent, frozenset(partial_scopes), time_zone, name)
        self.users[sub] = user
        return user

    def user_by_email(self, email: str) -> User | None:
        return next((u for u in self.users.values() if u.email == email), None)

    def find_user(self, sub_or_email: str) -> User:
        """The user whose sub or email (case-insensitive) is `sub_or_email`, else UnknownUser."""
        if sub_or_email in self.users:
            return self.users[sub_or_email]
        wanted = sub_or_email.lower()
        for user in self.users.values():
            if user.email.lower() == wanted:
                return user
        raise UnknownUser(sub_or_email)

    def default_user(self) -> User | None:
        if self.default_user_sub and self.default_user_sub in self.users:
            return self.users[self.default_user_sub]
        return next(iter(self.users.values()), None)

    def rotate_refresh_token_next(self, user: str | None = None, times: int = 1) -> None:
        """Make the next `times` refreshes (of `user`, sub or email; else anyone's) answer with a
        new refresh token, invalidating the one presented."""
        key = self.find_user(user).sub if user else "*"
        self.rotate_next_refresh[key] = self.rotate_next_refresh.get(key, 0) + times

    def take_rotation(self, sub: str) -> bool:
        """Consume one scripted rotation for `sub` if any is pending."""
        for key in (sub, "*"):
            if self.rotate_next_refresh.get(key, 0) > 0:
                self.rotate_next_refresh[key] -= 1
                return True
        return False

    def inject_fault(
        self,
        *,
        status: int | None = None,
        reason: str | None = None,
        times: int = 1,
        user: str | None = None,
        endpoint: str | None = None,
        delay_s: float = 0.0,
        drop_response: bool = False,
        after_delay_s: float = 0.0,
        hold: asyncio.Event | None = None,
    ) -> Fault:
        """Script the next `times` matching calls to fail (see `emulator.faults`); `user` may be
        a sub or an email."""
        return self.faults.add(
            status=status,
            reason=reason,
            times=times,
            user=self.find_user(user).sub if user else None,
            endpoint=endpoint,
            delay_s=delay_s,
            drop_response=drop_response,
            after_delay_s=after_delay_s,
            hold=hold,
        )

    # -- grants and tokens ----------------------------------------------------------------

    def active_grants(self, sub: str, client_id: str) -> list[Grant]:
        """Unrevoked grants of `sub` to `client_id`, oldest first."""
        return [
            g
            for g in self.grants.values()
            if g.sub == sub and g.client_id == client_id and not g.revoked
        ]

    def granted_scopes(self, sub: str, client_id: str) -> frozenset[str]:
        """Everything `sub` has currently granted `client_id`."""
        scopes: frozenset[str] = frozenset()
        for grant in self.active_grants(sub, client_id):
            scopes |= grant.scopes
        return scopes

    def create_grant(
        self, sub: str, client_id: str, scopes: Iterable[str], *, with_refresh_token: bool
    ) -> Grant:
        """Record a consent; give it a refresh token if asked (enforcing Google's 100 limit)."""
        grant = Grant(
            grant_id=self.new_token("grant-", 8),
            sub=sub,
            client_id=client_id,
            scopes=frozenset(scopes),
            created_at=self.clock(),
        )
        self.grants[grant.grant_id] = grant
        if with_refresh_token:
            self._give_refresh_token(grant)
            live = [g for g in self.active_grants(sub, client_id) if g.refresh_token]
            for oldest in live[: max(0, len(live) - self.max_refresh_tokens_per_client)]:
                self._retire_refresh_token(oldest)
        return grant

    def _give_refresh_token(self, grant: Grant) -> str:
        token = self.new_token("1//emu-")
        grant.refresh_token = token
        self.refresh_index[token] = grant.grant_id
        return token

    def _retire_refresh_token(self, grant: Grant) -> None:
        if grant.refresh_token:
            self.refresh_index.pop(grant.refresh_token, None)
            grant.retired_refresh_tokens.append(grant.refresh_token)
            grant.refresh_token = None

    def rotate_refresh_token(self, grant: Grant) -> str:
        """Replace `grant`'s refresh token with a new one; the old one stops working."""
        self._retire_refresh_token(grant)
        return self._give_refresh_token(grant)

    def grant_for_refresh_token(self, refresh_token: str) -> Grant | None:
        """The live grant holding `refresh_token`, else None (unknown, rotated away, revoked)."""
        grant_id = self.refresh_index.get(refresh_token)
        grant = self.grants.get(grant_id) if grant_id else None
        if grant is None or grant.revoked:
            return None
        lifetime = self.refresh_token_lifetime_s
        if lifetime is not None and grant.created_at + lifetime <= self.clock():
            return None
        return grant

    def issue_access_token(self, grant: Grant) -> AccessToken:
        token = AccessToken(
            token=self.new_token("ya29.emu-"),
            grant_id=grant.grant_id,
            expires_at=self.clock() + self.access_token_lifetime_s,
        )
        self.access_tokens[token.token] = token
        return token

    def issue_tokens(
        self,
        user: str,
        client_id: str | None = None,
        scopes: Iterable[str] = ("https://www.googleapis.com/auth/calendar",),
        *,
        offline: bool = True,
    ) -> IssuedTokens:
        """Grant `scopes` to `client_id` (default: the only/first client) for `user` (sub or
        email) without the browser dance, as if the user consented; for tests and benchmarks."""
        who = self.find_user(user)
        if client_id is None:
            if not self.clients:
                raise LookupError("no OAuth client registered")
            client_id = next(iter(self.clients))
        elif client_id not in self.clients:
            raise LookupError(f"unknown client {client_id!r}")
        grant = self.create_grant(who.sub, client_id, scopes, with_refresh_token=offline)
        return IssuedTokens(self.issue_access_token(grant), grant, grant.refresh_token)

    def revoke_grant_family(self, grant: Grant, *, by: str) -> list[Grant]:
        """Revoke every live grant of `grant`'s user to `grant`'s client; return them."""
        revoked = self.active_grants(grant.sub, grant.client_id)
        for g in revoked:
            g.revoked = True
            g.revoked_at = self.clock()
            g.revoked_by = by
        return revoked

    def revoke_user_access(self, user: str, client_id: str | None = None) -> list[Grant]:
        """The user removes the app's access in their Google account ("from Google's side"):
        every grant of `user` (to `client_id`, or to every client) dies at once."""
        who = self.find_user(user)
        revoked: list[Grant] = []
        for g in list(self.grants.values()):
            if g.sub == who.sub and not g.revoked and client_id in (None, g.client_id):
                revoked.extend(self.revoke_grant_family(g, by="user"))
        return revoked

    def revoked_grants(self, user: str | None = None) -> list[Grant]:
        """Revoked grants (of `user`, sub or email, if given), oldest first."""
        sub = self.find_user(user).sub if user else None
        return [g for g in self.grants.values() if g.revoked and sub in (None, g.sub)]

    def grant_for_token(self, token: str) -> Grant | None:
        """The grant an access or refresh token belongs to (revoked or not), else None."""
        if token in self.access_tokens:
            return self.grants.get(self.access_tokens[token].grant_id)
        grant_id = self.refresh_index.get(token)
        return self.grants.get(grant_id) if grant_id else None

    def sub_for_token(self, token: str) -> str | None:
        """Whose token this is (for fault targeting and the request log), even if dead."""
        grant = self.grant_for_token(token)
        if grant is not None:
            return grant.sub
        for g in self.grants.values():
            if token in g.retired_refresh_tokens:
                return g.sub
        code = self.auth_codes.get(token)
        return code.sub if code else None

    def authenticate(
        self, authorization: str | None, *, scopes_any: frozenset[str] = CALENDAR_SCOPES_READ
    ) -> Caller:
        """Check an `Authorization: Bearer` header; raise Google's 401 (or 403 for scopes)."""
        if not authorization or not authorization.startswith("Bearer "):
            raise invalid_credentials()
        token = self.access_tokens.get(authorization.removeprefix("Bearer ").strip())
        if token is None or token.expires_at <= self.clock():
            raise invalid_credentials()
        grant = self.grants.get(token.grant_id)
        if grant is None or grant.revoked:
            raise invalid_credentials()
        if scopes_any and not (grant.scopes & scopes_any):
            raise insufficient_scope()
        return Caller(user=self.users[grant.sub], grant=grant)
