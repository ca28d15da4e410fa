"""The gateway's tables, on one MetaData that Alembic migrations are written against.

Tables owned by the vault are defined by the vault (which must not import the gateway) and
attached here.
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, LargeBinary, MetaData, String, Table

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

api_keys = Table(
    "api_keys",
    metadata,
    # The public half of a key (`cgw_<key_id>_<secret>`): safe to show in lists and logs.
    Column("key_id", String(32), primary_key=True),
    Column("tenant_id", String(64), nullable=False, index=True),
    Column("name", String(200), nullable=True),
    Column("scopes", String(200), nullable=False),  # space separated
    # SHA-256 of the 256-bit random secret. A fast hash is right here: the secret has full
    # entropy, so there is nothing for a slow KDF to protect against.
    Column("secret_sha256", LargeBinary(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)
