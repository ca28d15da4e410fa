"""Building the vault from settings: shared by `create_app()` and the CLI."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.schema import vault_data_keys
from gateway.settings import Settings
from vault.cache import DekCache
from vault.providers import provider_from_uri
from vault.service import Vault
from vault.store import SqlDekStore
from vault.trust import TrustKeys


async def open_vault(settings: Settings, engine: AsyncEngine) -> Vault:
    """The vault for these settings, its KEK provider opened (keyring loaded, HSM logged in)."""
    pin = settings.pkcs11_pin.get_secret_value() if settings.pkcs11_pin else None
    provider = await provider_from_uri(settings.kek_uri, pkcs11_pin=pin)
    return Vault(
        provider=provider,
        store=SqlDekStore(engine, vault_data_keys),
        cache=DekCache(max_size=settings.dek_cache_size, ttl_s=settings.dek_cache_ttl_s),
        retire_grace_s=settings.kek_retire_grace_s,
    )


async def open_trust_keys(settings: Settings, vault: Vault) -> TrustKeys:
    """The receipt-signing and journal keys, created beside the journal on first use."""
    return await TrustKeys.open(settings.trust_keys_path, vault.provider)
