"""The key-encryption-key (KEK) provider interface.

A provider holds one or more numbered KEK versions, one of which is primary. It wraps a data key
(DEK) under the primary version and unwraps a wrapped DEK under the version it names. `aad`
binds a wrapped DEK to its owner (the vault passes the integration binding), so a wrapped DEK
copied to another row fails to unwrap.

Providers: `vault.keyring` (local file, default), `vault.pkcs11_provider` (PKCS#11 HSM),
`vault.awskms` (AWS KMS). `vault.providers.provider_from_uri()` picks one from GATEWAY_KEK_URI.

Methods are async because HSM and KMS calls block or go over the network: those providers run
their blocking calls in a worker thread. The local provider computes inline (microseconds of
AES, no I/O) so rewrapping is not throttled by thread hand-offs.

Every unwrap failure (bad bytes, unknown or retired version) raises `InvalidCiphertext`;
provider outages raise `KekProviderError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

KekState = Literal["primary", "active", "retired"]


@dataclass(frozen=True)
class KekVersion:
    """One KEK version as the provider reports it (no key material)."""

    version: int
    state: KekState
    created_at: datetime | None = None


@dataclass(frozen=True)
class WrappedKey:
    """A DEK wrapped by the KEK `kek_id` at `kek_version`. `wrapped` is provider-specific."""

    kek_id: str
    kek_version: int
    wrapped: bytes

    def __repr__(self) -> str:
        return (
            f"WrappedKey(kek_id={self.kek_id!r}, kek_version={self.kek_version}, "
            f"wrapped=<{len(self.wrapped)} bytes>)"
        )


@runtime_checkable
class KekProvider(Protocol):
    """What the vault needs from a KEK provider."""

    @property
    def kek_id(self) -> str:
        """A stable, non-secret name of this KEK (e.g. `local:keyring`, a KMS alias)."""
        ...

    async def primary_version(self) -> int:
        """The version new wraps use."""
        ...

    async def versions(self) -> list[KekVersion]:
        """Every version the provider knows, oldest first."""
        ...

    async def wrap(self, dek: bytes, aad: bytes) -> WrappedKey:
        """Wrap `dek` under the primary version, bound to `aad`."""
        ...

    async def unwrap(self, wrapped: WrappedKey, aad: bytes) -> bytes:
        """Return the DEK, or raise InvalidCiphertext (wrong aad, tampered, unknown/retired)."""
        ...

    async def rotate(self) -> int:
        """Create a new version, make it primary, return its number."""
        ...

    async def retire(self, version: int) -> None:
        """Make `version` unusable for unwrap. The vault checks no DEK depends on it first;
        the provider refuses (RetireRefused) to retire the primary."""
        ...

    async def close(self) -> None:
        """Release sessions and connections."""
        ...
