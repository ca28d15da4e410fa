"""PostgreSQL: a change of `calendars.version` or `integrations.version` sends its NOTIFY from a
trigger, not from a statement of the writer's own

Every write that bumps a version (gateway.db.notify) sent `SELECT pg_notify(...)` after its
UPDATE: one more round trip in each such transaction (two of the fourteen statements a pushed
change costs the two gateway processes of the sync bench). The trigger sends the same payload
inside the UPDATE, and PostgreSQL still delivers it only if, and when, the transaction commits.
SQLite has no NOTIFY: nothing changes there.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The payloads of gateway.db.notify.Change.payload(), on the channel it names (CHANNEL).
_FUNCTIONS = {
    "calendars": (
        "gateway_calendar_changed",
        "'c ' || NEW.id || ' ' || NEW.integration_id || ' ' || NEW.version",
    ),
    "integrations": ("gateway_integration_changed", "'i ' || NEW.id || ' ' || NEW.version"),
}


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    for table, (function, payload) in _FUNCTIONS.items():
        op.execute(
            f"""
            CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_notify('gateway_cache', {payload});
                RETURN NULL;
            END
            $$
            """
        )
        op.execute(
            f"""
            CREATE TRIGGER {table}_version_notify
            AFTER UPDATE OF version ON {table}
            FOR EACH ROW WHEN (NEW.version IS DISTINCT FROM OLD.version)
            EXECUTE FUNCTION {function}()
            """
        )


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    for table, (function, _) in _FUNCTIONS.items():
        op.execute(f"DROP TRIGGER {table}_version_notify ON {table}")
        op.execute(f"DROP FUNCTION {function}()")
