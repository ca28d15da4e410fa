"""per-row versions for the in-process caches (calendars.version, integrations.version)

Every write that changes what availability answers from a calendar (its busy blocks or its
freshness), or an integration's status or set of calendars, increments the row's version in
the same transaction (gateway.db.notify); caches remember the version they read and drop an
entry when told of a newer one.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("calendars", "integrations"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    for table in ("calendars", "integrations"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("version")
