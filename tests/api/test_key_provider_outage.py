"""A key provider outage is a clear, temporary 503 for calls that need a token (never a bare
500), and everything works again once the provider is back."""

from __future__ import annotations

from gateway.http.appkeys import VAULT_KEY
from tests.availability.helpers import ALICE, connect, day
from tests.booking.helpers import book, gateway_events, slot
from tests.stack import Stack
from vault.errors import KekProviderError
from vault.kek import KekProvider, KekVersion, WrappedKey


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


async def test_booking_during_an_outage_is_503_and_works_after(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    vault = stack.app[VAULT_KEY]
    provider = FlakyProvider(vault._provider)
    vault._provider = provider
    provider.down = True
    vault._cache.clear()  # data keys unwrapped before the outage would still work for a while

    d = day(7)
    refused = await book(stack, alice, slot(d), key="k-outage")
    assert refused.status == 503, refused.body
    assert refused.body["code"] == "key_provider_unavailable"
    assert refused.headers["Retry-After"] == "30"
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    assert gateway_events(stack, ALICE) == []  # nothing booked blind

    provider.down = False
    booked = await book(stack, alice, slot(d), key="k-outage")
    assert booked.status == 201, booked.body
    assert len(gateway_events(stack, ALICE)) == 1
