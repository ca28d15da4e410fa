"""Endpoints over the API, and deliveries to a real receiver: signed (verified with the
`standardwebhooks` library), retried on an injected clock, 410 and 5 days of failures
disabling the endpoint, redirects not followed, tenants isolated."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import select

from gateway.clock import utc_now
from gateway.connections.errors import IntegrationInactive
from gateway.db.schema import webhook_events
from gateway.http.appkeys import ENDPOINTS_KEY, INTEGRATIONS_KEY, TOKENS_KEY, WEBHOOK_STORE_KEY
from gateway.webhooks.destinations import DestinationPolicy
from gateway.webhooks.worker import DeliveryWorker
from tests.support.stack import Stack, loopback_only
from tests.webhooks.delivery_support import Clock, Workers, create_endpoint
from tests.webhooks.receiver import Receiver, receiver


@pytest.fixture
async def hooks() -> AsyncIterator[Receiver]:
    async with receiver() as running:
        yield running


async def deliveries(stack: Stack, endpoint_id: str) -> list[dict[str, Any]]:
    async with stack.http.get(
        stack.url(f"/v1/webhook-endpoints/{endpoint_id}/deliveries"), headers=stack.auth()
    ) as response:
        assert response.status == 200, await response.text()
        return list((await response.json())["deliveries"])


async def endpoint(stack: Stack, endpoint_id: str) -> dict[str, Any]:
    async with stack.http.get(
        stack.url(f"/v1/webhook-endpoints/{endpoint_id}"), headers=stack.auth()
    ) as response:
        assert response.status == 200, await response.text()
        return dict(await response.json())


async def test_connect_is_delivered_signed_and_only_to_its_tenant(
    stack: Stack, hooks: Receiver, workers: Workers
) -> None:
    mine = await create_endpoint(stack, hooks.url, ["integration.connected"])
    assert mine["secret"].startswith("whsec_")
    async with receiver() as theirs:
        other = await create_endpoint(
            stack, theirs.url, ["integration.connected"], key=stack.other_tenant_key
        )
        theirs.secrets.append(other["secret"])
        hooks.secrets.append(mine["secret"])
        back = await stack.connect("alice@example.com")
        assert await workers.start(stack).run_once() == 1
        assert theirs.requests == []
    [got] = hooks.requests
    assert got.verified, "the standardwebhooks library accepts the signature"
    assert got.payload["type"] == "integration.connected"
    assert got.payload["data"]["integration_id"] == back["integration_id"]
    assert got.payload["data"]["status"] == "active"
    assert "alice" not in got.body.decode(), "no email in the payload"
    # The secret is shown once: never in a read.
    assert "secret" not in await endpoint(stack, mine["id"])
    [shown] = await deliveries(stack, mine["id"])
    assert (shown["state"], shown["status_code"], shown["event_id"]) == (
        "delivered",
        204,
        got.id,
    )
    # Another tenant's endpoint is not found, as an unknown one is.
    for method in ("GET", "DELETE"):
        async with stack.http.request(
            method, stack.url(f"/v1/webhook-endpoints/{other['id']}"), headers=stack.auth()
        ) as response:
            assert response.status == 404
            assert (await response.json())["code"] == "webhook_endpoint_not_found"


async def test_failures_are_retried_with_backoff_then_delivered_once_with_the_same_id(
    stack: Stack, hooks: Receiver, workers: Workers
) -> None:
    made = await create_endpoint(stack, hooks.url, ["integration.connected"])
    hooks.script = [web.Response(status=500), web.Response(status=503)]
    await stack.connect("alice@example.com")
    clock = Clock()
    run = workers.start(stack, clock)
    assert await run.run_once() == 1
    [first] = await deliveries(stack, made["id"])
    assert (first["state"], first["status_code"], first["attempts"]) == ("pending", 500, 1)
    retry_at = first["next_retry_at"]
    assert retry_at is not None
    # Not due before its time; the first retry comes within 10 s.
    assert await run.run_once() == 0
    clock.advance(seconds=10)
    assert await run.run_once() == 1
    clock.advance(seconds=20)
    assert await run.run_once() == 1
    [done] = await deliveries(stack, made["id"])
    assert (done["state"], done["status_code"], done["attempts"]) == ("delivered", 204, 3)
    assert len(hooks.requests) == 3
    assert len(hooks.unique()) == 1, "every retry carries the same webhook-id"
    clock.advance(days=1)
    assert await run.run_once() == 0, "nothing more once delivered"


async def test_410_disables_the_endpoint(stack: Stack, hooks: Receiver, workers: Workers) -> None:
    made = await create_endpoint(stack, hooks.url, ["integration.connected"])
    hooks.default_status = 410
    await stack.connect("alice@example.com")
    assert await workers.start(stack).run_once() == 1
    shown = await endpoint(stack, made["id"])
    assert (shown["enabled"], shown["disabled_reason"]) == (False, "gone")
    [d] = await deliveries(stack, made["id"])
    assert d["state"] == "failed"


async def test_five_days_of_failures_disable_the_endpoint_and_three_days_give_up(
    stack: Stack, hooks: Receiver, workers: Workers
) -> None:
    made = await create_endpoint(stack, hooks.url, ["integration.connected"])
    hooks.default_status = 500
    await stack.connect("alice@example.com")
    clock = Clock()
    run = workers.start(stack, clock, rng=0.999)
    rounds = 0
    while (await deliveries(stack, made["id"]))[0]["state"] == "pending":
        assert await run.run_once() == 1
        clock.advance(hours=7)  # past the longest wait
        rounds += 1
        assert rounds < 100
    [d] = await deliveries(stack, made["id"])
    assert d["state"] == "failed", "given up once the event is 3 days old"
    assert (await endpoint(stack, made["id"]))["enabled"] is True, "3 days is not yet 5"
    # Two days later a new event fails again: the endpoint has been failing for 5 days.
    clock.advance(days=2)
    async with stack.http.post(
        stack.url(f"/v1/webhook-deliveries/{d['id']}/retry"), headers=stack.auth()
    ) as response:
        assert response.status == 202
    clock.advance(seconds=1)
    assert await run.run_once() == 1
    shown = await endpoint(stack, made["id"])
    assert (shown["enabled"], shown["disabled_reason"]) == (False, "failing")
    assert shown["failing_since"] is not None
    # Enabled again by its owner: deliveries resume.
    hooks.default_status = 204
    async with stack.http.patch(
        stack.url(f"/v1/webhook-endpoints/{made['id']}"),
        json={"enabled": True},
        headers=stack.auth(),
    ) as response:
        assert response.status == 200
        assert (await response.json())["failing_since"] is None


async def test_redirects_are_not_followed(stack: Stack, hooks: Receiver, workers: Workers) -> None:
    made = await create_endpoint(stack, hooks.url, ["integration.connected"])
    elsewhere = hooks.url.replace("/hook", "/elsewhere")
    hooks.script = [web.Response(status=307, headers={"Location": elsewhere})]
    await stack.connect("alice@example.com")
    assert await workers.start(stack).run_once() == 1
    assert hooks.other_path_hits == 0
    [d] = await deliveries(stack, made["id"])
    assert (d["state"], d["status_code"]) == ("pending", 307)


async def test_private_destinations_are_refused_at_creation(stack: Stack) -> None:
    for url in (
        "https://127.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.8/hook",
        "http://example.com/hook",
    ):
        async with stack.http.post(
            stack.url("/v1/webhook-endpoints"),
            json={"url": url, "events": ["integration.connected"]},
            headers=stack.auth(),
        ) as response:
            assert response.status == 422, url
            assert (await response.json())["code"] == "unsafe_webhook_url"
    async with stack.http.get(stack.url("/v1/webhook-endpoints"), headers=stack.auth()) as response:
        assert (await response.json())["endpoints"] == []


async def test_a_destination_that_turned_private_is_refused_at_delivery(
    stack: Stack, hooks: Receiver, workers: Workers
) -> None:
    """DNS rebinding: the name resolved to an allowed address when the endpoint was saved and
    to a refused one when the delivery goes out; nothing is sent."""
    made = await create_endpoint(stack, hooks.url, ["integration.connected"])
    await stack.connect("alice@example.com")
    strict = DeliveryWorker(
        stack.app[WEBHOOK_STORE_KEY],
        stack.app[ENDPOINTS_KEY],
        DestinationPolicy(),  # loopback no longer allowed
        loopback_only,
        owner="strict",
    )
    workers.adopt(strict)
    assert await strict.run_once() == 1
    assert hooks.requests == []
    [d] = await deliveries(stack, made["id"])
    assert (d["state"], d["error"]) == ("pending", "insecure_url")


async def test_rotation_signs_with_both_secrets(
    stack: Stack, hooks: Receiver, workers: Workers
) -> None:
    made = await create_endpoint(stack, hooks.url, ["integration.connected"])
    async with stack.http.post(
        stack.url(f"/v1/webhook-endpoints/{made['id']}/rotate-secret"), headers=stack.auth()
    ) as response:
        assert response.status == 200
        rotated = await response.json()
    assert rotated["secret"] != made["secret"]
    assert rotated["previous_secret_expires_at"] is not None
    await stack.connect("alice@example.com")
    assert await workers.start(stack).run_once() == 1
    [got] = hooks.requests
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    for secret in (made["secret"], rotated["secret"]):
        hooks.secrets[:] = [secret]
        assert hooks.verify(got.headers, got.body)
    # After 24 hours only the new secret signs.
    clock = Clock()
    clock.advance(hours=25)
    async with stack.http.post(
        stack.url(f"/v1/webhook-deliveries/{(await deliveries(stack, made['id']))[0]['id']}/retry"),
        headers=stack.auth(),
    ) as response:
        assert response.status == 202
    assert await workers.start(stack, clock).run_once() == 1
    assert len(hooks.requests[-1].headers["webhook-signature"].split(" ")) == 1


async def test_bad_input_and_scopes(stack: Stack) -> None:
    bad = [
        {"url": "https://hooks.example.com/x", "events": []},
        {"url": "https://hooks.example.com/x", "events": ["integration.exploded"]},
        {"url": "https://hooks.example.com/x", "events": ["integration.connected"], "x": 1},
    ]
    for body in bad:
        async with stack.http.post(
            stack.url("/v1/webhook-endpoints"), json=body, headers=stack.auth()
        ) as response:
            assert response.status == 422, body
    async with stack.http.get(stack.url("/v1/webhook-endpoints")) as response:
        assert response.status == 401


async def test_an_integrations_whole_life_is_announced_in_order(
    stack: Stack, hooks: Receiver, workers: Workers
) -> None:
    """connected -> needs_reauth (with the reason) -> reconnected -> disconnected (with the
    receipt), each written with its status change and delivered signed."""
    made = await create_endpoint(
        stack,
        hooks.url,
        [
            "integration.connected",
            "integration.needs_reauth",
            "integration.reconnected",
            "integration.disconnected",
        ],
    )
    hooks.secrets.append(made["secret"])
    back = await stack.connect("alice@example.com")
    integration_id = back["integration_id"]
    stack.google.revoke_user_access("alice@example.com")
    with pytest.raises(IntegrationInactive):
        await stack.app[TOKENS_KEY].force_refresh(integration_id)
    await stack.connect("alice@example.com")
    async with stack.http.delete(
        stack.url(f"/v1/integrations/{integration_id}"), headers=stack.auth()
    ) as response:
        assert response.status == 200
        receipt = await response.json()
    run = workers.start(stack)
    while await run.run_once():
        pass
    types = [
        r.payload["type"] for r in sorted(hooks.requests, key=lambda r: r.payload["timestamp"])
    ]
    assert sorted(types) == sorted(
        [
            "integration.connected",
            "integration.needs_reauth",
            "integration.reconnected",
            "integration.disconnected",
        ]
    )
    assert all(r.verified for r in hooks.requests)
    assert all(r.payload["data"]["integration_id"] == integration_id for r in hooks.requests)
    [reauth] = hooks.of_type("integration.needs_reauth")
    assert reauth.payload["data"]["reason"] == "invalid_grant"
    [gone] = hooks.of_type("integration.disconnected")
    assert gone.payload["data"]["status"] == "disconnected"
    assert gone.payload["data"]["receipt"]["revoked_at_google"] == receipt["revoked_at_google"]


async def test_a_receiver_down_for_a_while_then_up_gets_everything_once(
    stack: Stack, workers: Workers
) -> None:
    async with receiver() as first:
        made = await create_endpoint(
            stack, first.url, ["integration.connected", "integration.needs_reauth"]
        )
        url = first.url
    # The receiver is down: connections are refused.
    back = await stack.connect("alice@example.com")
    stack.google.revoke_user_access("alice@example.com")
    with pytest.raises(IntegrationInactive):
        await stack.app[TOKENS_KEY].force_refresh(back["integration_id"])
    clock = Clock()
    run = workers.start(stack, clock)
    assert await run.run_once() == 2
    shown = await deliveries(stack, made["id"])
    assert {(d["state"], d["error"]) for d in shown} == {("pending", "connection_failed")}
    port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
    async with receiver(port) as again:
        again.secrets.append(made["secret"])
        clock.advance(seconds=30)
        while await run.run_once():
            clock.advance(seconds=30)
        assert sorted(r.payload["type"] for r in again.requests) == [
            "integration.connected",
            "integration.needs_reauth",
        ]
        assert len(again.unique()) == len(again.requests) == 2, "each once"
    assert {d["state"] for d in await deliveries(stack, made["id"])} == {"delivered"}


async def event_types(stack: Stack) -> list[str]:
    async with stack.engine.connect() as conn:
        return list((await conn.execute(select(webhook_events.c.type))).scalars())


async def test_the_event_commits_or_rolls_back_with_the_status_change(stack: Stack) -> None:
    async with receiver() as hooks:  # nothing is delivered here: no worker runs
        await create_endpoint(stack, hooks.url, ["integration.needs_reauth"])
    integration_id = (await stack.connect("alice@example.com"))["integration_id"]
    repo = stack.app[INTEGRATIONS_KEY]
    async with stack.engine.connect() as conn:
        tx = await conn.begin()
        assert await repo.mark_needs_reauth(
            integration_id, reason="invalid_grant", at=utc_now(), conn=conn
        )
        await tx.rollback()
    assert await event_types(stack) == []
    integration = await repo.get("acme", integration_id)
    assert integration is not None and integration.status.value == "active"
    async with stack.engine.begin() as conn:
        assert await repo.mark_needs_reauth(
            integration_id, reason="invalid_grant", at=utc_now(), conn=conn
        )
    assert await event_types(stack) == ["integration.needs_reauth"]
