"""A per-process cache of unwrapped data keys (DEKs): bounded LRU with a time-to-live.

Unwrapping a DEK costs a database read and a KEK operation (an HSM or KMS round trip for
remote providers); the cache saves both for integrations in active use. It lives in memory
only, is never persisted, and `max_size=0` (or `ttl_s=0`) disables it.

Destroying a key evicts it here; other processes keep their copy for at most `ttl_s`, which
therefore bounds how long a destroyed key can still open blobs anywhere.

A lookup that misses reads the row and unwraps it outside any lock; meanwhile a destroy may
evict that integration. `ticket()` before the read and `put(..., ticket)` after guard that
race: a put whose ticket predates an eviction is dropped, so a destroyed key is never
re-cached.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


@dataclass(frozen=True, slots=True)
class CachedDek:
    """An unwrapped DEK and who it belongs to. Never printed."""

    dek_id: bytes
    tenant_id: str
    aead: AESGCM  # prepared once: key setup is a measurable share of a 200-byte open

    def __repr__(self) -> str:
        return f"CachedDek(dek_id={self.dek_id.hex()}, tenant_id={self.tenant_id!r})"


class DekCache:
    """LRU of `integration_id -> CachedDek`, each entry expiring `ttl_s` after it was stored."""

    def __init__(
        self,
        max_size: int = 10_000,
        ttl_s: float = 300.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_size < 0 or ttl_s < 0:
            raise ValueError("max_size and ttl_s must not be negative")
        self._max_size = max_size
        self._ttl_s = ttl_s
        self._clock = clock  # monotonic seconds
        self._entries: OrderedDict[str, tuple[float, CachedDek]] = OrderedDict()
        self._generation = 0
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        """False when configured off (size or TTL zero)."""
        return self._max_size > 0 and self._ttl_s > 0

    def get(self, integration_id: str) -> CachedDek | None:
        """The cached DEK, or None if absent or expired."""
        item = self._entries.get(integration_id)
        if item is None:
            self.misses += 1
            return None
        expires_at, dek = item
        if self._clock() >= expires_at:
            del self._entries[integration_id]
            self.misses += 1
            return None
        self._entries.move_to_end(integration_id)
        self.hits += 1
        return dek

    def ticket(self) -> int:
        """Take before reading a DEK from storage; pass to `put`."""
        return self._generation

    def put(self, integration_id: str, dek: CachedDek, ticket: int) -> None:
        """Cache `dek` unless disabled or an eviction happened since `ticket` was taken."""
        if not self.enabled or ticket != self._generation:
            return
        self._entries[integration_id] = (self._clock() + self._ttl_s, dek)
        self._entries.move_to_end(integration_id)
        while len(self._entries) > self._max_size:
            self._entries.popitem(last=False)

    def evict(self, integration_id: str) -> None:
        """Drop one integration's DEK (and invalidate puts already in flight)."""
        self._generation += 1
        self._entries.pop(integration_id, None)

    def clear(self) -> None:
        """Drop every DEK."""
        self._generation += 1
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return (
            f"DekCache(size={len(self._entries)}/{self._max_size}, ttl_s={self._ttl_s}, "
            f"hits={self.hits}, misses={self.misses})"
        )
