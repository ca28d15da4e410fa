"""The emulator's truth against the gateway's answer: what the agent would be told.

`google_busy` is the emulator's own merged busy time of a calendar (its freeBusy logic: not
cancelled, opaque, not declined by the owner); `gateway_busy` asks the gateway's freebusy API.
`assert_converged` compares both over windows covering the sync horizon.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.clock import rfc3339
from tests.support.stack import Stack

# freebusy answers at most 62 days at once; these windows cover most of the default horizon
# (30 days back, 365 ahead), relative to now.
WINDOW_DAYS = 62


def windows(
    now: datetime, past_days: int = 28, future_days: int = 360
) -> list[tuple[datetime, datetime]]:
    start = (now - timedelta(days=past_days)).replace(minute=0, second=0, microsecond=0)
    end = now + timedelta(days=future_days)
    found = []
    while start < end:
        found.append((start, min(start + timedelta(days=WINDOW_DAYS), end)))
        start += timedelta(days=WINDOW_DAYS)
    return found


def google_busy(stack: Stack, email: str, lo: datetime, hi: datetime) -> list[dict[str, str]]:
    """The emulator's busy periods of `email`'s primary calendar within [lo, hi)."""
    cal = stack.google.calendars.ensure_user(email)
    return [
        {"start": rfc3339(s), "end": rfc3339(e)}
        for s, e in stack.google.calendars.busy(cal, lo, hi)
        if s < e  # zero-length events block nothing
    ]


async def gateway_freebusy(
    stack: Stack,
    integration_id: str,
    lo: datetime,
    hi: datetime,
    *,
    base_url: str | None = None,
    max_staleness_s: int | None = None,
) -> dict[str, Any]:
    params = {"time_min": rfc3339(lo), "time_max": rfc3339(hi)}
    if max_staleness_s is not None:
        params["max_staleness_s"] = str(max_staleness_s)
    url = (base_url or stack.base_url) + f"/v1/integrations/{integration_id}/freebusy"
    async with stack.http.get(url, params=params, headers=stack.auth()) as response:
        body = dict(await response.json())
        assert response.status == 200, body
        return body


async def assert_converged(stack: Stack, integration_id: str, email: str) -> int:
    """The gateway's local copy answers exactly Google's busy time over the horizon, from the
    cache and complete. Returns how many busy periods were compared."""
    compared = 0
    for lo, hi in windows(datetime.now(UTC)):
        answer = await gateway_freebusy(stack, integration_id, lo, hi)
        assert answer["source"] == "cache" and answer["complete"] is True, answer
        expected = google_busy(stack, email, lo, hi)
        assert answer["busy"] == expected, (lo, hi, _diff(answer["busy"], expected))
        compared += len(expected)
    return compared


def _diff(got: list[dict[str, str]], want: list[dict[str, str]]) -> dict[str, Any]:
    got_set = {(b["start"], b["end"]) for b in got}
    want_set = {(b["start"], b["end"]) for b in want}
    return {
        "only_gateway": sorted(got_set - want_set)[:5],
        "only_google": sorted(want_set - got_set)[:5],
    }
