"""The gateway's tables, on one MetaData that Alembic migrations are written against.

Tables owned by the vault are defined by the vault (which must not import the gateway) and
attached here.
"""

from __future__ import annotations

from sqlalchemy import MetaData

from vault.store import data_keys_table

# A naming convention makes constraint names identical on SQLite and PostgreSQL, so migrations
# that alter constraints work the same on both.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

vault_data_keys = data_keys_table(metadata)
