"""Token buckets and the live-call limits, with a fake clock (no sleeping): a burst up to the
bucket, then a wait the buckets compute, refills as the clock moves; per key and per tenant;
background work (no caller) is not limited."""

from __future__ import annotations

import pytest

from gateway.errors import TooManyRequests
from gateway.livecalls import LiveCallLimits, caller_bound
from gateway.ratelimit import TokenBuckets


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_its_burst_then_says_how_long_to_wait() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate_per_min=6, burst=3, clock=clock)
    for _ in range(3):
        assert buckets.wait_s("k") == 0.0
        buckets.take("k")
    assert buckets.wait_s("k") == pytest.approx(10.0)  # 6 a minute: one every 10 s
    assert buckets.wait_s("other") == 0.0  # keys do not share
    clock.now += 4
    assert buckets.wait_s("k") == pytest.approx(6.0)
    clock.now += 6
    assert buckets.wait_s("k") == 0.0
    buckets.take("k")
    clock.now += 3600  # refills up to the burst, never beyond
    for _ in range(3):
        buckets.take("k")
    assert buckets.wait_s("k") > 0


def test_full_buckets_are_forgotten_when_the_table_is_full() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(rate_per_min=60, burst=1, clock=clock, max_keys=2)
    buckets.take("a")
    buckets.take("b")
    clock.now += 1  # both full again
    buckets.take("c")
    assert buckets.wait_s("c") == pytest.approx(1.0)
    assert len(buckets._buckets) == 1  # a and b forgotten, as if never seen


def test_live_calls_are_limited_per_key_and_per_tenant() -> None:
    clock = FakeClock()
    limits = LiveCallLimits(per_key_per_min=2, per_tenant_per_min=3, clock=clock)
    limits.admit()  # no caller bound: background work, not counted
    with caller_bound("acme", "key1"):
        limits.admit()
        limits.admit()
        with pytest.raises(TooManyRequests) as refused:
            limits.admit()
    assert refused.value.status == 429 and refused.value.code == "live_calls_limited"
    assert refused.value.headers["Retry-After"] == "30"  # 2 a minute: one every 30 s
    assert refused.value.extra == {"limit": "api_key", "retry_after_s": 30}
    with caller_bound("acme", "key2"):
        limits.admit()  # the tenant's third
        with pytest.raises(TooManyRequests) as refused:
            limits.admit()
    assert refused.value.extra["limit"] == "tenant"
    with caller_bound("globex", "key3"):
        limits.admit()  # another tenant has its own bucket
    clock.now += 20  # the tenant's bucket has a token again (3 a minute), key2's never ran out
    with caller_bound("acme", "key2"):
        limits.admit()
    # key1 refills too, but 20 s of the 30 it needs is not enough.
    with caller_bound("acme", "key1"), pytest.raises(TooManyRequests):
        limits.admit()
    clock.now += 40
    with caller_bound("acme", "key1"):
        limits.admit()


def test_a_refused_call_spends_from_neither_bucket() -> None:
    clock = FakeClock()
    limits = LiveCallLimits(per_key_per_min=1, per_tenant_per_min=3, clock=clock)
    with caller_bound("acme", "key1"):
        limits.admit()
        for _ in range(5):
            with pytest.raises(TooManyRequests):
                limits.admit()
    # key1's refusals cost the tenant nothing: two of its three calls are left for key2.
    with caller_bound("acme", "key2"):
        limits.admit()
    with caller_bound("acme", "key3"):
        limits.admit()
