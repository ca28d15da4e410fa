"""audit retention (an index on audit_log.at for the purge); the caller's app_state on
connect sessions

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The retention purge deletes by age across tenants (ix_audit_log_tenant_at leads with the
    # tenant, so it cannot serve that).
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    with op.batch_alter_table("connect_sessions") as batch:
        batch.add_column(sa.Column("app_state", sa.String(512), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("connect_sessions") as batch:
        batch.drop_column("app_state")
    op.drop_index("ix_audit_log_at", table_name="audit_log")
