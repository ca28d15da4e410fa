"""The one backoff formula: truncated exponential backoff with full jitter.

Google's retry policy (`gateway.google.retry.RetryPolicy`), the sync scheduler and the push
channel renewals (`gateway.sync.config.SchedulerConfig`) and webhook deliveries all wait by it.
"Full jitter" (a uniform draw below the cap, not the cap itself) spreads clients that failed
together instead of retrying in lockstep. Randomness comes in as a number so callers and tests
choose it.
"""

from __future__ import annotations

# 2**30 times any base is past any sane cap; stopping there keeps 2.0**n from overflowing.
_MAX_EXPONENT = 30


def backoff_s(
    retry: int, *, base_s: float, max_s: float, rng: float, retry_after_s: float | None = None
) -> float:
    """The wait before retry number `retry` (0 = the wait after the first failure):
    `rng * min(max_s, base_s * 2**retry)` with `rng` in [0, 1), never shorter than the
    server's `retry_after_s`. A caller that will not wait past `max_s` caps `retry_after_s`
    itself (the sync scheduler does; a retry policy with a budget does not need to)."""
    exponent = min(max(retry, 0), _MAX_EXPONENT)
    delay = rng * min(max_s, base_s * 2.0**exponent)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return delay
