"""Every answer carries X-Request-ID, and the audit entries of a request carry the same id."""

from __future__ import annotations

import pytest

from gateway.http.appkeys import AUDIT_KEY
from tests.support.stack import ALICE, Stack


async def test_the_callers_request_id_is_echoed(stack: Stack) -> None:
    async with stack.http.get(stack.url("/healthz"), headers={"X-Request-ID": "agent-42.7"}) as r:
        assert r.headers["X-Request-ID"] == "agent-42.7"


@pytest.mark.parametrize("presented", [None, "has space", "x" * 65, 'quote"d', "new\tline"])
async def test_a_missing_or_unsafe_request_id_is_replaced(
    stack: Stack, presented: str | None
) -> None:
    headers = {"X-Request-ID": presented} if presented is not None else {}
    async with stack.http.get(stack.url("/healthz"), headers=headers) as r:
        given = r.headers["X-Request-ID"]
    assert given.startswith("req_") and len(given) == 28
    assert given != presented


async def test_problem_answers_carry_it_too(stack: Stack) -> None:
    async with stack.http.get(
        stack.url("/v1/integrations"), headers={"X-Request-ID": "agent-err-1"}
    ) as r:
        assert r.status == 401
        assert r.headers["X-Request-ID"] == "agent-err-1"
    async with stack.http.get(stack.url("/no/such/path")) as r:
        assert r.status == 404
        assert r.headers["X-Request-ID"].startswith("req_")


async def test_audit_entries_name_the_request_that_caused_them(stack: Stack) -> None:
    connected = await stack.connect(ALICE, user_id="rep-1")
    async with stack.http.delete(
        stack.url(f"/v1/integrations/{connected['integration_id']}"),
        headers={**stack.auth(), "X-Request-ID": "agent-disconnect-9"},
    ) as r:
        assert r.status in (200, 202), await r.text()
    entries = await stack.app[AUDIT_KEY].entries(
        tenant_id="acme", integration_id=connected["integration_id"]
    )
    disconnect = [e for e in entries if e.action.startswith("disconnect")]
    assert disconnect and disconnect[0].request_id == "agent-disconnect-9"
    # Entries written by the connect flow name the callback request, never nothing.
    assert all(e.request_id for e in entries)
