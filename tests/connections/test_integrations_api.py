"""The integrations read API: list, get, export; tenant isolation; never a token or ciphertext."""

from __future__ import annotations

import base64
import json
from typing import Any

from sqlalchemy import select

from gateway.apikeys import ApiKeyStore
from gateway.db.schema import integrations, vault_data_keys
from tests.support.openapi import assert_conforms
from tests.support.stack import ALICE, ALICE_SUB, DAVE, Stack, issued_secrets

TOKEN_WORDS = ("refresh_token", "access_token", "id_token", "wrapped", "ciphertext")


async def get(stack: Stack, path: str, key: str | None = None) -> tuple[int, Any]:
    async with stack.http.get(stack.url(path), headers=stack.auth(key)) as response:
        body = await response.json()
        if response.status >= 400:
            assert response.content_type == "application/problem+json"
        return response.status, body


def assert_no_secret(stack: Stack, document: Any, extra: frozenset[bytes] = frozenset()) -> None:
    text = json.dumps(document)
    for secret in issued_secrets(stack.google):
        assert secret not in text
    for blob in extra:
        for form in (
            blob.hex(),
            base64.b64encode(blob).decode(),
            base64.urlsafe_b64encode(blob).decode().rstrip("="),
        ):
            assert form not in text


async def test_list_and_get(stack: Stack) -> None:
    alice = (await stack.connect(ALICE, user_id="u-1"))["integration_id"]
    dave = (await stack.connect(DAVE, user_id="u-2"))["integration_id"]

    status, body = await get(stack, "/v1/integrations?user_id=u-1")
    assert status == 200
    assert [i["id"] for i in body["integrations"]] == [alice]

    status, body = await get(stack, "/v1/integrations")
    assert status == 200
    assert {i["id"] for i in body["integrations"]} == {alice, dave}

    status, one = await get(stack, f"/v1/integrations/{alice}")
    assert status == 200
    assert one == body["integrations"][0] or one["id"] == alice
    assert set(one) >= {
        "id",
        "user_id",
        "status",
        "google_email",
        "granted_scopes",
        "capabilities",
        "created_at",
        "last_refresh_at",
    }
    assert not set(one) & set(TOKEN_WORDS)
    assert "tenant_id" not in one and "google_sub" not in one
    assert_no_secret(stack, body)

    status, body = await get(stack, "/v1/integrations?user_id=nobody")
    assert (status, body) == (200, {"integrations": []})


async def test_unknown_and_malformed_ids_are_404(stack: Stack) -> None:
    for integration_id in ("int_000000000000000000000000", "nope", "int_" + "g" * 24):
        status, problem = await get(stack, f"/v1/integrations/{integration_id}")
        assert status == 404
        assert problem["code"] == "integration_not_found"
        status, _ = await get(stack, f"/v1/integrations/{integration_id}/export")
        assert status == 404


async def test_another_tenant_sees_nothing(stack: Stack) -> None:
    alice = (await stack.connect(ALICE, user_id="u-1"))["integration_id"]
    other = stack.other_tenant_key
    for path in (f"/v1/integrations/{alice}", f"/v1/integrations/{alice}/export"):
        status, problem = await get(stack, path, other)
        assert status == 404, path
        assert problem["code"] == "integration_not_found"
    for path in ("/v1/integrations", "/v1/integrations?user_id=u-1"):
        status, body = await get(stack, path, other)
        assert (status, body) == (200, {"integrations": []})


async def test_read_scope_is_required(stack: Stack) -> None:
    alice = (await stack.connect(ALICE, user_id="u-1"))["integration_id"]
    writer = (await ApiKeyStore(stack.engine).create("acme", ["connections:write"])).value
    for path in (
        "/v1/integrations",
        f"/v1/integrations/{alice}",
        f"/v1/integrations/{alice}/export",
    ):
        status, problem = await get(stack, path, writer)
        assert (status, problem["code"]) == (403, "insufficient_scope")
        async with stack.http.get(stack.url(path)) as response:
            assert response.status == 401
        async with stack.http.get(
            stack.url(path), headers={"Authorization": "Bearer cgw_nonsense"}
        ) as response:
            assert response.status == 401


async def test_list_query_is_strict(stack: Stack) -> None:
    status, problem = await get(stack, "/v1/integrations?userid=u-1")
    assert (status, problem["code"], problem["field"]) == (422, "unknown_field", "userid")
    status, problem = await get(stack, "/v1/integrations?user_id=a&user_id=b")
    assert (status, problem["code"]) == (422, "duplicate_field")
    status, problem = await get(stack, "/v1/integrations?user_id=" + "x" * 201)
    assert (status, problem["code"], problem["field"]) == (422, "invalid_field", "user_id")
    assert "x" * 50 not in problem["detail"]


async def test_export_has_everything_but_secrets(stack: Stack) -> None:
    alice = (await stack.connect(ALICE, user_id="u-1"))["integration_id"]
    await stack.connect(ALICE, user_id="u-1")  # a reconnect: a second audit entry

    status, export = await get(stack, f"/v1/integrations/{alice}/export")
    assert status == 200
    assert export["integration"]["id"] == alice
    assert export["integration"]["google_email"] == ALICE
    assert export["integration"]["google_sub"] == ALICE_SUB
    assert export["integration"]["tenant_id"] == "acme"
    assert export["tokens"]["refresh_token_stored"] is True
    assert export["tokens"]["access_token_stored"] is True
    assert [(e["action"], e["outcome"]) for e in export["audit"]] == [
        ("connect", "ok"),
        ("connect", "ok"),
    ]
    async with stack.engine.connect() as conn:
        key_row = (await conn.execute(select(vault_data_keys))).mappings().one()
        token_row = (await conn.execute(select(integrations))).mappings().one()
    assert export["data_key"]["dek_id"] == key_row["dek_id"]
    assert export["data_key"]["kek_version"] == key_row["kek_version"]
    assert set(export["data_key"]) == {
        "dek_id",
        "kek_id",
        "kek_version",
        "created_at",
        "rewrapped_at",
    }

    # Zero hits for every token the emulator issued, and for every stored blob in any encoding.
    blobs = frozenset({key_row["wrapped"], token_row["refresh_token"], token_row["access_token"]})
    assert_no_secret(stack, export, blobs)


# -- the answers match the OpenAPI document ---------------------------------------------------


async def test_answers_match_the_openapi_schemas(stack: Stack) -> None:
    session = await stack.start_connect("u-9")
    assert_conforms(session, "ConnectSession")
    alice = (await stack.connect(ALICE, user_id="u-1"))["integration_id"]
    _, listed = await get(stack, "/v1/integrations")
    assert_conforms(listed, "IntegrationList")
    _, one = await get(stack, f"/v1/integrations/{alice}")
    assert_conforms(one, "Integration")
    _, export = await get(stack, f"/v1/integrations/{alice}/export")
    assert_conforms(export, "IntegrationExport")
    _, problem = await get(stack, "/v1/integrations?nope=1")
    assert_conforms(problem, "ValidationProblem")
