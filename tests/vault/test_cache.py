"""The DEK cache: LRU bound, TTL on an injected clock, eviction, and off-switches."""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault.cache import CachedDek, DekCache

SECRET = bytes(range(32))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def dek(n: int = 0) -> CachedDek:
    return CachedDek(dek_id=bytes([n]) * 16, tenant_id="t", aead=AESGCM(SECRET))


def test_get_returns_what_was_put() -> None:
    cache = DekCache(10, 60)
    entry = dek()
    cache.put("i1", entry, cache.ticket())
    assert cache.get("i1") is entry
    assert cache.get("i2") is None


def test_least_recently_used_entry_goes_first() -> None:
    cache = DekCache(2, 60)
    cache.put("a", dek(1), cache.ticket())
    cache.put("b", dek(2), cache.ticket())
    assert cache.get("a") is not None  # a is now more recent than b
    cache.put("c", dek(3), cache.ticket())
    assert cache.get("b") is None
    assert cache.get("a") is not None
    assert cache.get("c") is not None
    assert len(cache) == 2


def test_entries_expire_after_ttl() -> None:
    clock = FakeClock()
    cache = DekCache(10, 300, clock=clock)
    cache.put("i1", dek(), cache.ticket())
    clock.now += 299.9
    assert cache.get("i1") is not None
    clock.now += 0.1
    assert cache.get("i1") is None
    assert len(cache) == 0


def test_size_zero_or_ttl_zero_disables() -> None:
    for cache in (DekCache(0, 60), DekCache(10, 0)):
        cache.put("i1", dek(), cache.ticket())
        assert cache.get("i1") is None
        assert not cache.enabled


def test_evict_and_clear() -> None:
    cache = DekCache(10, 60)
    for name in ("a", "b", "c"):
        cache.put(name, dek(), cache.ticket())
    cache.evict("a")
    assert cache.get("a") is None
    assert cache.get("b") is not None
    cache.clear()
    assert len(cache) == 0


def test_a_put_started_before_an_eviction_is_dropped() -> None:
    # An open read the key row, then destroy ran: the destroyed key must not be re-cached.
    cache = DekCache(10, 60)
    ticket = cache.ticket()
    cache.evict("i1")
    cache.put("i1", dek(), ticket)
    assert cache.get("i1") is None


def test_repr_shows_counts_only() -> None:
    cache = DekCache(10, 60)
    entry = dek(7)
    cache.put("integration-secret-ish", entry, cache.ticket())
    cache.get("integration-secret-ish")
    cache.get("missing")
    text = repr(cache)
    assert text == "DekCache(size=1/10, ttl_s=60, hits=1, misses=1)"
    assert SECRET.hex() not in repr(entry)
