"""calendar_events: the series index holds the exceptions only

`ix_calendar_events_series` (calendar_id, generation, recurring_event_id) finds a series'
exceptions (a delta's merge, a deleted master's exceptions). It had an entry for every record,
though only exceptions have a `recurring_event_id`: in a calendar's first copy (a thousand
records in one INSERT, while SQLite's one writer is held) those entries were ~15% of the
INSERT's CPU. Partial, `WHERE recurring_event_id IS NOT NULL`, it serves the same reads: each
compares `recurring_event_id` with a value, which implies it is not NULL, on SQLite and
PostgreSQL alike.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAME = "ix_calendar_events_series"
_COLUMNS = ["calendar_id", "generation", "recurring_event_id"]
_EXCEPTIONS = sa.text("recurring_event_id IS NOT NULL")


def upgrade() -> None:
    op.drop_index(_NAME, table_name="calendar_events")
    op.create_index(
        _NAME,
        "calendar_events",
        _COLUMNS,
        sqlite_where=_EXCEPTIONS,
        postgresql_where=_EXCEPTIONS,
    )


def downgrade() -> None:
    op.drop_index(_NAME, table_name="calendar_events")
    op.create_index(_NAME, "calendar_events", _COLUMNS)
