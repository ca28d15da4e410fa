"""calendars.push_error: why a calendar has no push channel (shown in its status)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("calendars") as batch:
        batch.add_column(sa.Column("push_error", sa.String(80), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calendars") as batch:
        batch.drop_column("push_error")
