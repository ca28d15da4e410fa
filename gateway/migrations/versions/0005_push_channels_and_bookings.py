"""push channels (watch_channels) and idempotent bookings (bookings)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "watch_channels",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("calendar_id", sa.String(32), nullable=False),
        sa.Column("integration_id", sa.String(32), nullable=False),
        sa.Column("resource_id", sa.String(255), nullable=True),
        sa.Column("token_sha256", sa.LargeBinary(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("expires_at", _TS, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("last_message_at", _TS, nullable=True),
        sa.Column("last_message_number", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_watch_channels")),
    )
    op.create_index("ix_watch_channels_calendar", "watch_channels", ["calendar_id"])
    op.create_index("ix_watch_channels_integration", "watch_channels", ["integration_id"])
    op.create_table(
        "bookings",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("integration_id", sa.String(32), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("google_event_id", sa.String(64), nullable=False),
        sa.Column("google_calendar_id", sa.String(320), nullable=False),
        sa.Column("body_sha256", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "integration_id", "idempotency_key", name=op.f("pk_bookings")
        ),
    )
    op.create_index("ix_bookings_event", "bookings", ["integration_id", "google_event_id"])


def downgrade() -> None:
    op.drop_index("ix_bookings_event", table_name="bookings")
    op.drop_table("bookings")
    op.drop_index("ix_watch_channels_integration", table_name="watch_channels")
    op.drop_index("ix_watch_channels_calendar", table_name="watch_channels")
    op.drop_table("watch_channels")
