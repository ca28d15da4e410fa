"""The stored records of an integration for `GET /v1/integrations/{id}/export` (the user's
right of access): every row of every table that refers to the integration, secrets excepted.

`EXPORT_SECTIONS` says where each such table shows in the export; a table with an
`integration_id` or `calendar_id` column missing from it fails tests/connections/
test_export.py, so a new table cannot be forgotten. Rows are exported column by column
(all columns but `SECRET_COLUMNS`), so a new column is exported without anyone remembering.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.clock import rfc3339
from gateway.db.schema import (
    bookings,
    busy_blocks,
    calendar_events,
    calendars,
    watch_channels,
    webhook_events,
)

# Where each table referring to an integration shows in the export document. The first four
# are rendered by the export handler itself; `records.<table>` by `stored_records()`.
EXPORT_SECTIONS = {
    "integrations": "integration",
    "vault_data_keys": "data_key",
    "audit_log": "audit",
    "disconnect_receipts": "receipt",
    "calendars": "records.calendars",
    "calendar_events": "records.calendar_events",
    "busy_blocks": "records.busy_blocks",
    "watch_channels": "records.watch_channels",
    "bookings": "records.bookings",
    "webhook_events": "records.webhook_events",
}

# Never exported: sealed tokens, the wrapped data key, the hash of a push channel's secret.
SECRET_COLUMNS = {
    ("integrations", "refresh_token"),
    ("integrations", "access_token"),
    ("vault_data_keys", "wrapped"),
    ("watch_channels", "token_sha256"),
}

# Text columns holding JSON: exported as the JSON they hold.
_JSON_COLUMNS = {
    ("calendar_events", "details"),
    ("calendar_events", "recurrence"),
    ("bookings", "response"),
    ("webhook_events", "body"),
}


def _value(table: str, column: str, value: Any) -> Any:
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, bytes):  # not a secret (those are left out), but not text either
        return value.hex()
    if (table, column) in _JSON_COLUMNS and isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def export_row(table: Table, row: Any) -> dict[str, Any]:
    """One row as exported: every column but the secret ones, JSON-ready."""
    mapping = row._mapping
    return {
        # str(): SQLAlchemy's quoted_name is a str subclass, which orjson refuses as a key.
        str(column.name): _value(table.name, column.name, mapping[column])
        for column in table.columns
        if (table.name, column.name) not in SECRET_COLUMNS
    }


async def stored_records(
    engine: AsyncEngine, tenant_id: str, integration_id: str
) -> dict[str, list[dict[str, Any]]]:
    """`records`: the integration's calendars (whose Google ids are the user's email), synced
    events (with their stored details), busy blocks, push channels, bookings and the webhook
    events about it."""
    async with engine.connect() as conn:
        calendar_rows = (
            await conn.execute(
                select(calendars)
                .where(calendars.c.integration_id == integration_id)
                .order_by(calendars.c.id)
            )
        ).all()
        calendar_ids = [r.id for r in calendar_rows]
        records: dict[str, list[dict[str, Any]]] = {
            "calendars": [export_row(calendars, r) for r in calendar_rows]
        }
        for table in (calendar_events, busy_blocks):
            rows = (
                await conn.execute(
                    select(table)
                    .where(table.c.calendar_id.in_(calendar_ids))
                    .order_by(*table.primary_key.columns)
                )
            ).all()
            records[str(table.name)] = [export_row(table, r) for r in rows]
        rows = (
            await conn.execute(
                select(watch_channels)
                .where(watch_channels.c.integration_id == integration_id)
                .order_by(watch_channels.c.id)
            )
        ).all()
        records["watch_channels"] = [export_row(watch_channels, r) for r in rows]
        rows = (
            await conn.execute(
                select(bookings)
                .where(
                    bookings.c.integration_id == integration_id,
                    bookings.c.tenant_id == tenant_id,
                )
                .order_by(bookings.c.idempotency_key)
            )
        ).all()
        records["bookings"] = [export_row(bookings, r) for r in rows]
        # The webhook events about it (their bodies carry ids, codes, times and, for meetings
        # the gateway booked, their details).
        rows = (
            await conn.execute(
                select(webhook_events)
                .where(
                    webhook_events.c.integration_id == integration_id,
                    webhook_events.c.tenant_id == tenant_id,
                )
                .order_by(webhook_events.c.created_at, webhook_events.c.id)
            )
        ).all()
        records["webhook_events"] = [export_row(webhook_events, r) for r in rows]
    return records
