"""Housekeeping rounds (gateway.periodic): when the first one runs, and that a failing round
does not end the rest."""

from __future__ import annotations

import asyncio

import pytest

from gateway.periodic import periodic

HOUR_S = 3600.0  # no second round within a test: only the first is under test


async def test_the_first_round_runs_before_the_app_serves_by_default() -> None:
    rounds: list[int] = []

    async def job() -> None:
        rounds.append(1)

    async with periodic(job, what="test job", interval_s=HOUR_S):
        assert rounds == [1]


async def test_a_background_first_round_does_not_hold_start_up() -> None:
    release, ran = asyncio.Event(), asyncio.Event()

    async def job() -> None:
        await release.wait()  # as slow as Google may be
        ran.set()

    async with periodic(job, what="test job", interval_s=HOUR_S, first="background"):
        assert not ran.is_set()  # entered while the round still waits
        release.set()
        await ran.wait()


async def test_a_later_first_round_waits_for_the_interval() -> None:
    rounds: list[int] = []

    async def job() -> None:
        rounds.append(1)

    async with periodic(job, what="test job", interval_s=HOUR_S, first="later"):
        for _ in range(5):
            await asyncio.sleep(0)  # let the task run as far as it would
        assert rounds == []


async def test_a_failing_round_is_logged_and_does_not_escape(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def job() -> None:
        raise RuntimeError("database briefly unreachable")

    async with periodic(job, what="test job", interval_s=HOUR_S):
        pass
    assert "test job failed" in caplog.text
