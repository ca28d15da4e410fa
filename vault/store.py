"""Storage of wrapped data keys (DEKs): the one table the vault owns.

The table is defined on a MetaData passed in, so the gateway's schema (and its Alembic
migrations) include it without the vault importing the gateway.
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Integer, LargeBinary, MetaData, String, Table


def data_keys_table(metadata: MetaData) -> Table:
    """`vault_data_keys`: one row per integration; the DEK only ever stored wrapped.

    Destroying an integration's key deletes its row (no soft delete): that is the crypto-shred.
    """
    return Table(
        "vault_data_keys",
        metadata,
        Column("dek_id", String(32), primary_key=True),  # 128 random bits, hex
        Column("tenant_id", String(64), nullable=False),
        Column("integration_id", String(64), nullable=False, unique=True),
        Column("kek_id", String(200), nullable=False),
        Column("kek_version", Integer, nullable=False, index=True),
        Column("wrapped", LargeBinary, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("rewrapped_at", DateTime(timezone=True), nullable=True),
    )
