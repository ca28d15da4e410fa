"""A key provider that can be switched off: the real provider behind a switch, for tests of
what users see during an HSM or KMS outage."""

from __future__ import annotations

from vault.errors import KekProviderError
from vault.kek import KekProvider, KekVersion, WrappedKey
from vault.service import Vault


class FlakyProvider:
    """The real provider behind a switch: while `down`, every key operation fails the way an
    unreachable HSM or KMS does."""

    def __init__(self, inner: KekProvider) -> None:
        self._inner = inner
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise KekProviderError("provider unreachable (test outage)")

    @property
    def kek_id(self) -> str:
        return self._inner.kek_id

    async def primary_version(self) -> int:
        self._check()
        return await self._inner.primary_version()

    async def versions(self) -> list[KekVersion]:
        self._check()
        return await self._inner.versions()

    async def wrap(self, dek: bytes, aad: bytes) -> WrappedKey:
        self._check()
        return await self._inner.wrap(dek, aad)

    async def unwrap(self, wrapped: WrappedKey, aad: bytes) -> bytes:
        self._check()
        return await self._inner.unwrap(wrapped, aad)

    async def rotate(self) -> int:
        self._check()
        return await self._inner.rotate()

    async def retire(self, version: int) -> None:
        self._check()
        await self._inner.retire(version)

    async def close(self) -> None:
        await self._inner.close()


def cut_off(vault: Vault) -> FlakyProvider:
    """Put `vault`'s provider behind a switch, turned off, with the data key cache emptied
    (keys unwrapped before an outage keep working for a while; the tests want the outage)."""
    provider = FlakyProvider(vault._provider)
    vault._provider = provider
    provider.down = True
    forget_cached_keys(vault)
    return provider


def forget_cached_keys(vault: Vault) -> None:
    """Empty the vault's data key cache, so the next use unwraps from the database."""
    vault._cache.clear()
