"""Applying and checking Alembic migrations on the gateway's async engine.

The migration scripts live in the package (`gateway/migrations`), so an installed gateway can
migrate without an `alembic.ini` in the working directory. Alembic is synchronous: it runs on
the engine's connection through `run_sync`, the connection-sharing recipe from Alembic's
asyncio cookbook, so no second engine and no second event loop is made.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import NotMigratedError, StorageError


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", "gateway:migrations")
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at (None for an empty database)."""

    def _current(conn: Connection) -> str | None:
        return MigrationContext.configure(conn).get_current_revision()

    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_current)
    except (SQLAlchemyError, OSError) as exc:
        raise StorageError(f"cannot reach the database: {_short(exc)}") from None


async def upgrade(engine: AsyncEngine, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate to `revision`; returns (revision before, revision after)."""
    before = await current_revision(engine)
    cfg = alembic_config()

    def _upgrade(conn: Connection) -> None:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)

    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade)
    except (SQLAlchemyError, OSError) as exc:
        raise StorageError(f"migration failed: {_short(exc)}") from None
    return before, await current_revision(engine)


async def ensure_migrated(engine: AsyncEngine) -> None:
    """Raise NotMigratedError unless the database is at the code's head revision."""
    current = await current_revision(engine)
    head = head_revision()
    if current != head:
        state = "empty (never migrated)" if current is None else f"at revision {current}"
        raise NotMigratedError(
            f"the database is {state} but this gateway needs revision {head}; "
            "run `calendar-gateway migrate` (or start with `serve --migrate`)"
        )


def _short(exc: BaseException) -> str:
    # The first line of a driver error names the problem; later lines may quote SQL parameters.
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
