"""The emulator's in-memory world: clients, users, grants and access tokens.

Time comes from an injectable `clock` (seconds since the epoch) and randomness from `token_bytes`,
so tests can expire tokens without sleeping. Calendar data lives in `calendars` (see
`emulator/calendar_store.py`); OAuth behaviour in `emulator/oauth.py`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from emulator.calendar_store import CalendarStore
from emulator.errors import invalid_credentials, insufficient_scope

ConsentMode = Literal["grant", "deny", "partial"]

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
    grant everything asked, deny (`access_denied`), or grant only `partial_scopes` of what was
    asked (granular consent)."""

    sub: str
    email: str
    consent: ConsentMode = "grant"
    partial_scopes: frozenset[str] = frozenset()
    time_zone: str = "UTC"


@dataclass
class Grant:
    """One user's consent to one client: the refresh token and the scopes really granted."""

    grant_id: str
    sub: str
    client_id: str
    scopes: frozenset[str]
    refresh_token: str
    revoked: bool = False

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
class Caller:
    """Who a Calendar API request is from, after bearer authentication."""

    user: User
    grant: Grant


@dataclass
class EmulatorState:
    clock: Callable[[], float] = time.time
    token_bytes: Callable[[int], bytes] = secrets.token_bytes
    access_token_lifetime_s: int = 3599
    clients: dict[str, OAuthClient] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)  # by sub
    grants: dict[str, Grant] = field(default_factory=dict)  # by grant_id
    refresh_index: dict[str, str] = field(default_factory=dict)  # refresh token -> grant_id
    access_tokens: dict[str, AccessToken] = field(default_factory=dict)
    calendars: CalendarStore = field(default_factory=CalendarStore)

    def new_token(self, prefix: str, nbytes: int = 32) -> str:
        """A fresh opaque token. Prefixes mimic Google's shapes (`ya29.`, `1//`)."""
        return prefix + self.token_bytes(nbytes).hex()

    def user_by_email(self, email: str) -> User | None:
        return next((u for u in self.users.values() if u.email == email), None)

    def issue_access_token(self, grant: Grant) -> AccessToken:
        token = AccessToken(
            token=self.new_token("ya29.emu-"),
            grant_id=grant.grant_id,
            expires_at=self.clock() + self.access_token_lifetime_s,
        )
        self.access_tokens[token.token] = token
        return token

    def authenticate(self, authorization: str | None, *, scopes_any: frozenset[str] = CALENDAR_SCOPES_READ) -> Caller:
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
