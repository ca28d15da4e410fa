"""A key provider outage is a clear, temporary 503 for calls that need a token (never a bare
500), and everything works again once the provider is back."""

from __future__ import annotations

from gateway.http.appkeys import VAULT_KEY
from tests.support.availability import ALICE, connect, day
from tests.support.booking import book, gateway_events, slot
from tests.support.key_outage import cut_off
from tests.support.stack import Stack


async def test_booking_during_an_outage_is_503_and_works_after(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    provider = cut_off(stack.app[VAULT_KEY])

    d = day(7)
    refused = await book(stack, alice, slot(d), key="k-outage")
    assert refused.status == 503, refused.body
    assert refused.body["code"] == "key_provider_unavailable"
    assert refused.headers["Retry-After"] == "30"
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    assert gateway_events(stack, ALICE) == []  # nothing booked blind

    provider.down = False
    booked = await book(stack, alice, slot(d), key="k-outage")
    assert booked.status == 201, booked.body
    assert len(gateway_events(stack, ALICE)) == 1
