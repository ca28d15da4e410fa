"""The integration (one user's connected Google Calendar): pure domain code, no I/O."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from gateway.clock import rfc3339
from gateway.settings import AVAILABILITY_SCOPE, BOOKING_SCOPE

_CAL = "https://www.googleapis.com/auth/calendar"

# A broader scope implies a narrower one: a deployment that asks for more (GOOGLE_SCOPES) still
# gets the right capabilities.
AVAILABILITY_SCOPES = frozenset(
    {AVAILABILITY_SCOPE, _CAL, f"{_CAL}.readonly", f"{_CAL}.events", f"{_CAL}.events.readonly"}
)
BOOKING_SCOPES = frozenset({BOOKING_SCOPE, _CAL, f"{_CAL}.events"})


# What a sealed blob holds; bound into its associated data by the vault, so an access token
# blob can never be opened as a refresh token.
PURPOSE_REFRESH_TOKEN = "refresh_token"  # noqa: S105 (a label, not a secret)
PURPOSE_ACCESS_TOKEN = "access_token"  # noqa: S105 (a label, not a secret)


class Status(StrEnum):
    ACTIVE = "active"
    NEEDS_REAUTH = "needs_reauth"
    DISCONNECTING = "disconnecting"
    DISCONNECTED = "disconnected"


class Capability(StrEnum):
    AVAILABILITY = "availability"
    BOOKING = "booking"


def capabilities_for(granted_scopes: frozenset[str]) -> list[Capability]:
    """What the agent may do with a grant, from the scopes Google really granted."""
    found = []
    if granted_scopes & AVAILABILITY_SCOPES:
        found.append(Capability.AVAILABILITY)
    if granted_scopes & BOOKING_SCOPES:
        found.append(Capability.BOOKING)
    return found


# Google answers the sign-in scopes in their URL form whatever spelling was asked.
_SIGN_IN_ALIASES = {
    "email": "https://www.googleapis.com/auth/userinfo.email",
    "profile": "https://www.googleapis.com/auth/userinfo.profile",
}


def excess_scopes(granted: frozenset[str], requested: list[str]) -> list[str]:
    """The scopes a grant holds beyond what was asked for (sorted). Google may still merge a
    broader scope the user granted this client before into a new grant; the gateway never uses
    it, but the user and the tenant should see that the token could."""
    asked = set(requested) | {_SIGN_IN_ALIASES[s] for s in requested if s in _SIGN_IN_ALIASES}
    return sorted(granted - asked)


def new_integration_id(random_bytes: bytes) -> str:
    """`int_` + 24 hex characters (96 random bits)."""
    if len(random_bytes) != 12:
        raise ValueError("an integration id takes 12 random bytes")
    return "int_" + random_bytes.hex()


OWNER_TAG_BYTES = 18


def new_owner_tag(random_bytes: bytes | None = None) -> str:
    """The value of the private extended property on every event this integration books
    (144 random bits, base64url). Bound to one integration, not to the Google account: the
    same account connected under another tenant, or again after a disconnect, sees the same
    events at Google but cannot claim this integration's meetings (their details)."""
    raw = secrets.token_bytes(OWNER_TAG_BYTES) if random_bytes is None else random_bytes
    if len(raw) != OWNER_TAG_BYTES:
        raise ValueError(f"an owner tag takes {OWNER_TAG_BYTES} random bytes")
    return base64.urlsafe_b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class Integration:
    """Everything about an integration except its tokens (those stay sealed in the database)."""

    id: str
    tenant_id: str
    user_id: str
    status: Status
    google_sub: str | None
    google_email: str | None
    granted_scopes: frozenset[str]
    created_at: datetime
    updated_at: datetime
    last_refresh_at: datetime | None = None
    access_token_expires_at: datetime | None = None
    reauth_reason: str | None = None
    disconnect_requested_at: datetime | None = None
    disconnect_step: int = 0
    # Marks the meetings this integration booked at Google (see `new_owner_tag`).
    owner_tag: str = field(default_factory=new_owner_tag, repr=False)

    @property
    def capabilities(self) -> list[Capability]:
        """What the agent may do: nothing once a disconnect began (the grant is being or has
        been revoked), otherwise what the granted scopes allow."""
        if self.status in (Status.DISCONNECTING, Status.DISCONNECTED):
            return []
        return capabilities_for(self.granted_scopes)

    @property
    def usable(self) -> bool:
        """Whether Google may be called for it (never once reauth or disconnect began)."""
        return self.status is Status.ACTIVE

    def to_public(self) -> dict[str, Any]:
        """The API representation: no token, no ciphertext."""
        return {
            "id": self.id,
            "user_id": self.user_id,
            "status": self.status.value,
            "google_email": self.google_email,
            "granted_scopes": sorted(self.granted_scopes),
            "capabilities": [c.value for c in self.capabilities],
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
            "last_refresh_at": rfc3339(self.last_refresh_at),
            "reauth_reason": self.reauth_reason,
        }
