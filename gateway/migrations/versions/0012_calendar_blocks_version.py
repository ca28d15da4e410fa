"""calendars.blocks_version: the version at which the calendar's busy blocks last changed

The availability index keeps a calendar's block arrays across changes of its freshness alone
(a sync requested, claimed, failed; a push channel opened): a reload reads the row, and reads
the blocks again only when `blocks_version` moved.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("calendars") as batch:
        batch.add_column(
            sa.Column("blocks_version", sa.Integer, nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("calendars") as batch:
        batch.drop_column("blocks_version")
