"""What an integration lets the agent do, derived from the scopes Google really granted."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from gateway.connections.model import Integration, Status, capabilities_for
from gateway.settings import AVAILABILITY_SCOPE, BOOKING_SCOPE

NOW = datetime(2026, 11, 22, tzinfo=UTC)


@pytest.mark.parametrize(
    ("scopes", "expected"),
    [
        ({AVAILABILITY_SCOPE, BOOKING_SCOPE}, ["availability", "booking"]),
        ({AVAILABILITY_SCOPE}, ["availability"]),
        ({"openid", "email"}, []),
        # A deployment that asks for broader scopes gets the capabilities they imply.
        ({"https://www.googleapis.com/auth/calendar"}, ["availability", "booking"]),
        ({"https://www.googleapis.com/auth/calendar.readonly"}, ["availability"]),
    ],
)
def test_capabilities_follow_granted_scopes(scopes: set[str], expected: list[str]) -> None:
    assert [c.value for c in capabilities_for(frozenset(scopes))] == expected


def test_a_disconnected_integration_offers_nothing() -> None:
    active = Integration(
        id="int_000000000000000000000001",
        tenant_id="acme",
        user_id="rep-1",
        status=Status.ACTIVE,
        google_sub="1",
        google_email="rep@example.com",
        granted_scopes=frozenset({AVAILABILITY_SCOPE, BOOKING_SCOPE}),
        created_at=NOW,
        updated_at=NOW,
    )
    assert active.to_public()["capabilities"] == ["availability", "booking"]
    for status in (Status.DISCONNECTING, Status.DISCONNECTED):
        assert replace(active, status=status).to_public()["capabilities"] == []
