"""Partial indexes for the scheduler's due scan: calendars with a sync requested, and calendars
without a complete copy

The scan (gateway.sync.lease_store) ran every second and after every finished sync, and read
every calendar row to find the few that were due: 2 ms of CPU at 1,000 calendars, 12 ms at
10,000 on SQLite. It now reads each reason to be due through an index.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_REQUESTED = sa.text("sync_requested_at IS NOT NULL")
_UNCOPIED = sa.text("active_generation IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_calendars_sync_requested",
        "calendars",
        ["sync_requested_at"],
        sqlite_where=_REQUESTED,
        postgresql_where=_REQUESTED,
    )
    op.create_index(
        "ix_calendars_uncopied",
        "calendars",
        ["id"],
        sqlite_where=_UNCOPIED,
        postgresql_where=_UNCOPIED,
    )


def downgrade() -> None:
    op.drop_index("ix_calendars_uncopied", table_name="calendars")
    op.drop_index("ix_calendars_sync_requested", table_name="calendars")
