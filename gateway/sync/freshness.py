"""How current a calendar's local copy is: the one rule every reader applies (pure, no I/O).

    as_of = copy_as_of(now, complete=True, synced=True, sync_pending=False, push_live=True,
                       last_success_at=..., last_push_at=..., push_trust_s=900)

`as_of` is the instant up to which the copy is known to match Google (None: no complete copy).

* Without a live push channel, or while a sync is pending or failing, it is the last successful
  sync: nothing newer is known.
* With a live channel, Google tells us of every change, so the copy is current (`as_of` = now)
  -- but only for `push_trust_s` (GATEWAY_PUSH_TRUST_S) after the last sign of life: the last
  notification or the last successful sync. Google's channels sometimes stop delivering without
  a word; past that window the copy falls back to its last successful sync, and the safety poll
  (run at the same interval for pushed calendars) renews it. A dead channel thus costs at most
  `push_trust_s` of staleness, and answers say so through `as_of`.

Used by `ReadStore` (the database path) and the in-memory availability index alike, so both
answer the same `as_of` for the same facts.
"""

from __future__ import annotations

from datetime import datetime, timedelta

DEFAULT_PUSH_TRUST_S = 900.0


def copy_as_of(
    now: datetime,
    *,
    complete: bool,
    synced: bool,
    sync_pending: bool,
    push_live: bool,
    last_success_at: datetime | None,
    last_push_at: datetime | None,
    push_trust_s: float,
) -> datetime | None:
    """The copy's `as_of` (see the module doc).

    complete         the calendar has an active generation (a full sync completed)
    synced           its last sync attempt succeeded (state `synced`)
    sync_pending     a notification or request waits for its sync
    push_live        an active watch channel that has not expired watches it
    last_success_at  the last successful sync
    last_push_at     the last notification any of its channels delivered
    """
    if not complete:
        return None
    if push_live and synced and not sync_pending:
        signs = [t for t in (last_success_at, last_push_at) if t is not None]
        if signs and now - max(signs) <= timedelta(seconds=push_trust_s):
            return now
    return last_success_at
