"""Alembic environment: runs on the connection handed in by gateway.db.migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, text

from gateway.db.schema import metadata

# Any fixed number: it only has to be the same in every gateway process.
_MIGRATION_LOCK_ID = 0x63616C67  # "calg"


def _run(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Two processes started with --migrate at once must not both apply the same revision.
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite needs batch ALTERs
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `calendar-gateway migrate`")
_run(connection)
