"""integrations, connect sessions, audit log

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "integrations",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("google_sub", sa.String(255), nullable=True),
        sa.Column("google_email", sa.String(320), nullable=True),
        sa.Column("granted_scopes", sa.Text(), nullable=False),
        sa.Column("refresh_token", sa.LargeBinary(), nullable=True),
        sa.Column("access_token", sa.LargeBinary(), nullable=True),
        sa.Column("access_token_expires_at", _TS, nullable=True),
        sa.Column("reauth_reason", sa.String(64), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("last_refresh_at", _TS, nullable=True),
        sa.Column("disconnect_requested_at", _TS, nullable=True),
        sa.Column("disconnect_step", sa.Integer(), nullable=False),
        sa.Column("disconnect_lease_owner", sa.String(64), nullable=True),
        sa.Column("disconnect_lease_until", _TS, nullable=True),
        sa.Column("disconnect_receipt", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_integrations")),
    )
    op.create_index("ix_integrations_tenant_user", "integrations", ["tenant_id", "user_id"])
    op.create_index("ix_integrations_status", "integrations", ["status"])

    op.create_table(
        "connect_sessions",
        sa.Column("state_sha256", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("return_url", sa.Text(), nullable=False),
        sa.Column("login_hint", sa.String(320), nullable=True),
        sa.Column("code_verifier", sa.String(128), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("consumed_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("state_sha256", name=op.f("pk_connect_sessions")),
    )

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=True),
        sa.Column("integration_id", sa.String(32), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_integration", "audit_log", ["integration_id"])
    op.create_index("ix_audit_log_tenant_at", "audit_log", ["tenant_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_tenant_at", table_name="audit_log")
    op.drop_index("ix_audit_log_integration", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("connect_sessions")
    op.drop_index("ix_integrations_status", table_name="integrations")
    op.drop_index("ix_integrations_tenant_user", table_name="integrations")
    op.drop_table("integrations")
