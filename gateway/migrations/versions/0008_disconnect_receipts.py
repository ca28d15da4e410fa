"""signed destruction receipts (disconnect_receipts)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "disconnect_receipts",
        sa.Column("receipt_id", sa.String(32), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("integration_id", sa.String(32), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("journal_seq", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("receipt_id", name=op.f("pk_disconnect_receipts")),
        sa.UniqueConstraint("integration_id", name=op.f("uq_disconnect_receipts_integration_id")),
    )


def downgrade() -> None:
    op.drop_table("disconnect_receipts")
