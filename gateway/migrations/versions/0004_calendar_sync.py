"""calendar sync: calendars, minimal event records, materialised busy blocks

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "calendars",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("integration_id", sa.String(32), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("google_calendar_id", sa.String(320), nullable=False),
        sa.Column("time_zone", sa.String(64), nullable=False),
        sa.Column("sync_token", sa.Text(), nullable=True),
        sa.Column("active_generation", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("last_success_at", _TS, nullable=True),
        sa.Column("last_attempt_at", _TS, nullable=True),
        sa.Column("last_error", sa.String(64), nullable=True),
        sa.Column("horizon_start", _TS, nullable=True),
        sa.Column("horizon_end", _TS, nullable=True),
        sa.Column("sync_requested_at", _TS, nullable=True),
        sa.Column("next_poll_at", _TS, nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", _TS, nullable=True),
        sa.Column("backoff_until", _TS, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calendars")),
    )
    op.create_index(
        "ix_calendars_integration_google",
        "calendars",
        ["integration_id", "google_calendar_id"],
        unique=True,
    )
    op.create_index("ix_calendars_next_poll_at", "calendars", ["next_poll_at"])

    op.create_table(
        "calendar_events",
        sa.Column("calendar_id", sa.String(32), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(1024), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("transparency", sa.String(16), nullable=False),
        sa.Column("self_declined", sa.Boolean(), nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("all_day", sa.Boolean(), nullable=False),
        sa.Column("start_at", _TS, nullable=True),
        sa.Column("end_at", _TS, nullable=True),
        sa.Column("start_date", sa.String(10), nullable=True),
        sa.Column("end_date", sa.String(10), nullable=True),
        sa.Column("time_zone", sa.String(64), nullable=True),
        sa.Column("recurrence", sa.Text(), nullable=True),
        sa.Column("recurring_event_id", sa.String(1024), nullable=True),
        sa.Column("original_start", sa.String(16), nullable=True),
        sa.Column("etag", sa.String(64), nullable=True),
        sa.Column("updated", sa.String(40), nullable=True),
        sa.Column("created_by_gateway", sa.Boolean(), nullable=False),
        sa.Column("details", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint(
            "calendar_id", "generation", "event_id", name=op.f("pk_calendar_events")
        ),
    )
    op.create_index(
        "ix_calendar_events_series",
        "calendar_events",
        ["calendar_id", "generation", "recurring_event_id"],
    )

    op.create_table(
        "busy_blocks",
        sa.Column("calendar_id", sa.String(32), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(1024), nullable=False),
        sa.Column("start_at", _TS, nullable=False),
        sa.Column("end_at", _TS, nullable=False),
        sa.Column("series_id", sa.String(1024), nullable=False),
        sa.PrimaryKeyConstraint(
            "calendar_id", "generation", "event_id", "start_at", name=op.f("pk_busy_blocks")
        ),
    )
    op.create_index(
        "ix_busy_blocks_range", "busy_blocks", ["calendar_id", "generation", "start_at"]
    )
    op.create_index(
        "ix_busy_blocks_series", "busy_blocks", ["calendar_id", "generation", "series_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_busy_blocks_series", table_name="busy_blocks")
    op.drop_index("ix_busy_blocks_range", table_name="busy_blocks")
    op.drop_table("busy_blocks")
    op.drop_index("ix_calendar_events_series", table_name="calendar_events")
    op.drop_table("calendar_events")
    op.drop_index("ix_calendars_next_poll_at", table_name="calendars")
    op.drop_index("ix_calendars_integration_google", table_name="calendars")
    op.drop_table("calendars")
