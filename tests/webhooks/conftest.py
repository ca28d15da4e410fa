"""Fixtures of the webhook tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.stack import EmulatorSecrets, Stack, start_stack
from tests.webhooks.delivery_support import Workers


@pytest.fixture
async def stack(
    engine: AsyncEngine, database_url: str, tmp_path: Path, emulator_secrets: EmulatorSecrets
) -> AsyncIterator[Stack]:
    """The stack of every webhook test: no worker in the app (each test drives its own, with
    an injected clock, or a `serve` child; the app's would race them), and http deliveries to
    the loopback receiver allowed."""
    async for running in start_stack(
        engine,
        database_url,
        tmp_path,
        emulator_secrets=emulator_secrets,
        webhook_worker=False,
        webhook_allow_insecure_loopback=True,
    ):
        yield running


@pytest.fixture
async def workers() -> AsyncIterator[Workers]:
    """Delivery workers the test starts (`workers.start(stack, clock)`), closed after it."""
    made = Workers()
    try:
        yield made
    finally:
        await made.close()
