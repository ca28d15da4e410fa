"""The vault tests' database and vault factory types (the fixtures that make them are in
conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from vault.service import Vault
from vault.store import SqlDekStore


@dataclass
class VaultDb:
    engine: AsyncEngine
    table: Table
    store: SqlDekStore


VaultFactory = Callable[..., Vault]
