"""Rows of `integrations` and `calendars` written straight to a database, for tests of the
stores beneath the services (the scheduler's scan, the cache NOTIFY): the columns every such
row must have, and the values a test chooses."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

AT = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def integration_values(integration_id: str, *, at: datetime = AT, **values: Any) -> dict[str, Any]:
    """An active integration of tenant `t` (`values` override)."""
    row: dict[str, Any] = {
        "id": integration_id,
        "tenant_id": "t",
        "user_id": f"u-{integration_id}",
        "status": "active",
        "owner_tag": "x" * 32,
        "granted_scopes": "",
        "created_at": at,
        "updated_at": at,
        "disconnect_step": 0,
    }
    row.update(values)
    return row


def calendar_values(
    calendar_id: str, integration_id: str, *, at: datetime = AT, **values: Any
) -> dict[str, Any]:
    """The primary calendar of `integration_id`, never synced (`values` override)."""
    row: dict[str, Any] = {
        "id": calendar_id,
        "integration_id": integration_id,
        "tenant_id": "t",
        "google_calendar_id": "primary",
        "time_zone": "UTC",
        "state": "initial",
        "attempts": 0,
        "created_at": at,
        "updated_at": at,
    }
    row.update(values)
    return row
