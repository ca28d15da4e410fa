"""An integration whose data key no longer opens (a backup restored after its KEK version was
retired, or a tampered key row) is a reconnectable `needs_reauth` integration, never a 500: the
agent gets 409 integration_inactive, and the user connects again in place."""

from __future__ import annotations

from sqlalchemy import select, update

from gateway.db.schema import vault_data_keys
from gateway.http.appkeys import VAULT_KEY
from tests.support.availability import ALICE, call, connect, day
from tests.support.booking import book, gateway_events, slot
from tests.support.key_outage import forget_cached_keys
from tests.support.stack import Stack


async def break_data_key(stack: Stack, integration_id: str) -> None:
    """Flip one byte of the integration's wrapped data key, as a restore from before a KEK
    retirement leaves it: the KEK provider refuses to unwrap it."""
    async with stack.engine.begin() as conn:
        wrapped = (
            await conn.execute(
                select(vault_data_keys.c.wrapped).where(
                    vault_data_keys.c.integration_id == integration_id
                )
            )
        ).scalar_one()
        tampered = bytearray(wrapped)
        tampered[-1] ^= 1
        await conn.execute(
            update(vault_data_keys)
            .where(vault_data_keys.c.integration_id == integration_id)
            .values(wrapped=bytes(tampered))
        )
    forget_cached_keys(stack.app[VAULT_KEY])


async def test_an_unopenable_key_means_needs_reauth_and_reconnecting_repairs_it(
    stack: Stack,
) -> None:
    alice = await connect(stack, ALICE)
    await break_data_key(stack, alice)

    refused = await book(stack, alice, slot(day(7), if_free=False), key="k-broken")
    assert refused.status == 409, refused.body
    assert refused.body["code"] == "integration_inactive"
    assert refused.body["integration_status"] == "needs_reauth"
    shown = await call(stack, "GET", f"/v1/integrations/{alice}")
    assert shown.body["status"] == "needs_reauth"
    assert gateway_events(stack, ALICE) == []

    # The user connects again: same integration, a new data key, usable at once.
    again = await stack.connect(ALICE, user_id="u-alice")
    assert again["status"] == "connected" and again["integration_id"] == alice
    assert (await call(stack, "GET", f"/v1/integrations/{alice}")).body["status"] == "active"
    booked = await book(stack, alice, slot(day(7), if_free=False), key="k-repaired")
    assert booked.status == 201, booked.body
    assert len(gateway_events(stack, ALICE)) == 1
