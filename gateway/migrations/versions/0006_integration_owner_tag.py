"""integrations.owner_tag: the per-integration mark on events it books

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05

Until now every booked event carried one constant private property, so the same Google account
connected under another tenant (or connected again after a disconnect) recognised another
integration's meetings as its own and kept their details. Each integration now has a random tag.
Existing integrations get a fresh one: the meetings they booked before are, from now on, treated
like the user's own events (busy time only) until they are booked again.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _tag() -> str:
    # The same form as gateway.connections.model.new_owner_tag (migrations import no app code).
    return base64.urlsafe_b64encode(secrets.token_bytes(18)).decode("ascii")


def upgrade() -> None:
    op.add_column("integrations", sa.Column("owner_tag", sa.String(32), nullable=True))
    integrations = sa.table("integrations", sa.column("id", sa.String), sa.column("owner_tag"))
    conn = op.get_bind()
    ids = [row[0] for row in conn.execute(sa.select(integrations.c.id))]
    for integration_id in ids:
        conn.execute(
            integrations.update()
            .where(integrations.c.id == integration_id)
            .values(owner_tag=_tag())
        )
    with op.batch_alter_table("integrations") as batch:
        batch.alter_column("owner_tag", existing_type=sa.String(32), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("integrations") as batch:
        batch.drop_column("owner_tag")
