"""busy_blocks: times as epoch seconds, rows in the primary key ordered by start

A sync writes a calendar's blocks by the thousand and the availability index reads them as
epoch seconds. Stored as integers they need no conversion on either side (SQLite kept
SQLAlchemy's text form, converted in Python on the way in and with `strftime` on the way
out). The primary key becomes (calendar_id, generation, start_at, event_id): the same rows
are unique, and it serves range reads, so `ix_busy_blocks_range` goes. On SQLite the table
is WITHOUT ROWID: the rows live in that key's B-tree, one structure less to write per block.

Starts are rounded down and ends up to whole seconds (a block is never stored shorter).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _sqlite_rebuild(
    time_type: sa.types.TypeEngine[Any], start: str, end: str, *, new: bool
) -> None:
    """SQLite cannot change a column's type or a table's key: copy into a new table."""
    op.create_table(
        "busy_blocks_next",
        sa.Column("calendar_id", sa.String(32), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(1024), nullable=False),
        sa.Column("start_at", time_type, nullable=False),
        sa.Column("end_at", time_type, nullable=False),
        sa.Column("series_id", sa.String(1024), nullable=False),
        sa.PrimaryKeyConstraint(
            *(
                ("calendar_id", "generation", "start_at", "event_id")
                if new
                else ("calendar_id", "generation", "event_id", "start_at")
            ),
            name="pk_busy_blocks",
        ),
        sqlite_with_rowid=not new,
    )
    # The expressions are this module's constants.
    copy = f"SELECT calendar_id, generation, event_id, {start}, {end}, series_id FROM busy_blocks"  # noqa: S608
    op.execute(
        "INSERT INTO busy_blocks_next (calendar_id, generation, event_id, start_at, end_at, "
        f"series_id) {copy}"
    )
    op.drop_index("ix_busy_blocks_series", table_name="busy_blocks")
    if new:
        op.drop_index("ix_busy_blocks_range", table_name="busy_blocks")
    op.drop_table("busy_blocks")
    op.rename_table("busy_blocks_next", "busy_blocks")
    op.create_index(
        "ix_busy_blocks_series", "busy_blocks", ["calendar_id", "generation", "series_id"]
    )
    if not new:
        op.create_index(
            "ix_busy_blocks_range", "busy_blocks", ["calendar_id", "generation", "start_at"]
        )


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_rebuild(
            sa.BigInteger(),
            "CAST(strftime('%s', start_at) AS INTEGER)",
            # The text form is `YYYY-MM-DD HH:MM:SS.ffffff`: a fraction adds a second.
            "CAST(strftime('%s', end_at) AS INTEGER) + (substr(end_at, 21) > '000000')",
            new=True,
        )
        return
    op.drop_index("ix_busy_blocks_range", table_name="busy_blocks")
    op.drop_constraint("pk_busy_blocks", "busy_blocks", type_="primary")
    op.alter_column(
        "busy_blocks",
        "start_at",
        type_=sa.BigInteger(),
        postgresql_using="floor(extract(epoch FROM start_at))::bigint",
    )
    op.alter_column(
        "busy_blocks",
        "end_at",
        type_=sa.BigInteger(),
        postgresql_using="ceil(extract(epoch FROM end_at))::bigint",
    )
    op.create_primary_key(
        "pk_busy_blocks", "busy_blocks", ["calendar_id", "generation", "start_at", "event_id"]
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_rebuild(
            sa.DateTime(timezone=True),
            "strftime('%Y-%m-%d %H:%M:%S', start_at, 'unixepoch') || '.000000'",
            "strftime('%Y-%m-%d %H:%M:%S', end_at, 'unixepoch') || '.000000'",
            new=False,
        )
        return
    op.drop_constraint("pk_busy_blocks", "busy_blocks", type_="primary")
    for column in ("start_at", "end_at"):
        op.alter_column(
            "busy_blocks",
            column,
            type_=sa.DateTime(timezone=True),
            postgresql_using=f"to_timestamp({column})",
        )
    op.create_primary_key(
        "pk_busy_blocks", "busy_blocks", ["calendar_id", "generation", "event_id", "start_at"]
    )
    op.create_index(
        "ix_busy_blocks_range", "busy_blocks", ["calendar_id", "generation", "start_at"]
    )
