"""Fixtures of the webhook tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.webhooks.delivery_support import Workers


@pytest.fixture
async def workers() -> AsyncIterator[Workers]:
    """Delivery workers the test starts (`workers.start(stack, clock)`), closed after it."""
    made = Workers()
    try:
        yield made
    finally:
        await made.close()
