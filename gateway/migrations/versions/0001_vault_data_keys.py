"""vault data keys

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "vault_data_keys",
        sa.Column("dek_id", sa.String(32), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("integration_id", sa.String(64), nullable=False),
        sa.Column("kek_id", sa.String(200), nullable=False),
        sa.Column("kek_version", sa.Integer(), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rewrapped_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("dek_id", name=op.f("pk_vault_data_keys")),
        sa.UniqueConstraint("integration_id", name=op.f("uq_vault_data_keys_integration_id")),
    )
    op.create_index(
        op.f("ix_vault_data_keys_kek_version"), "vault_data_keys", ["kek_version"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_vault_data_keys_kek_version"), table_name="vault_data_keys")
    op.drop_table("vault_data_keys")
