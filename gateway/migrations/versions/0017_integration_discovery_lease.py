"""integrations.discovery_until: one process discovers a new integration's calendars

Every gateway process looked for active integrations without a calendar row and asked Google
for each one's primary calendar. Processes that looked at the same moment (any burst of
connections; every one of them when many connect at once) all asked, then all but one found
the other's row or lost the INSERT: a Google call, a token and data-key read and a
transaction spent once per integration per process instead of once. A process now claims the
integrations it discovers: the column holds the claim (or, after a failed discovery, the
backoff) until that instant, for every process.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("integrations") as batch:
        batch.add_column(sa.Column("discovery_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("integrations") as batch:
        batch.drop_column("discovery_until")
