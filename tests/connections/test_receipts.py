"""Signed destruction receipts, end to end on SQLite and PostgreSQL: what a disconnect signs,
the public keys, `calendar-gateway receipts verify`, the README's ten-line script, rotation,
and the receipt outliving everything else about the user."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select

from gateway.db.schema import audit_log, disconnect_receipts, integrations
from gateway.http.appkeys import VAULT_KEY
from tests.support.cli import run_cli
from tests.support.stack import ALICE, Stack

ROOT = Path(__file__).resolve().parents[2]


def readme_script() -> str:
    """The verification script exactly as README.md shows it."""
    readme = (ROOT / "README.md").read_text("utf-8")
    section = readme[readme.index("### Signed destruction receipts") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match[1]


async def disconnected(stack: Stack, user_id: str = "u-1") -> tuple[str, dict[str, Any], Any]:
    """Connect Alice through the browser journey, note her data key, disconnect: the DELETE
    answer and the key info as it was."""
    integration_id = (await stack.connect(ALICE, user_id=user_id))["integration_id"]
    key = await stack.app[VAULT_KEY].key_info("acme", integration_id)
    assert key is not None
    url = stack.url(f"/v1/integrations/{integration_id}")
    async with stack.http.delete(url, headers=stack.auth()) as response:
        assert response.status == 200, await response.text()
        answer = dict(await response.json())
    return integration_id, answer, key


async def receipt_keys(stack: Stack) -> dict[str, Any]:
    async with stack.http.get(stack.url("/v1/receipts/keys")) as response:
        assert response.status == 200, await response.text()
        return dict(await response.json())


def cli_env(stack: Stack) -> dict[str, str]:
    return {
        "GATEWAY_DATABASE_URL": stack.settings.database_url,
        "GATEWAY_KEK_URI": stack.settings.kek_uri,
    }


async def cli(stack: Stack, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_cli, *args, cwd=tmp_path, env=cli_env(stack))


async def test_a_disconnect_answers_a_signed_receipt_that_names_everything(
    stack: Stack, tmp_path: Path
) -> None:
    integration_id, answer, key = await disconnected(stack)

    signed = answer["receipt"]
    receipt = signed["receipt"]
    assert receipt["type"] == "calendar-gateway.destruction-receipt" and receipt["version"] == 1
    assert receipt["tenant_id"] == "acme" and receipt["integration_id"] == integration_id
    assert receipt["revocation"] == "revoked" and receipt["revoked_at_google"] is True
    assert receipt["tokens_destroyed"] is True
    assert receipt["channels_stopped"] == answer["channels_stopped"]
    assert receipt["records_purged"] == answer["records_purged"]
    assert receipt["completed_at"] == answer["completed_at"]
    assert receipt["requested_at"] <= receipt["completed_at"]
    assert receipt["data_key"] == {
        "dek_id": key.dek_id,
        "kek_id": key.kek_id,
        "kek_version": key.kek_version,
    }
    assert ALICE not in json.dumps(signed)
    keys = (await receipt_keys(stack))["keys"]
    assert [k["key_id"] for k in keys] == [receipt["key_id"]]
    assert keys[0]["algorithm"] == "Ed25519" and keys[0]["retired_at"] is None

    # Asked again: the same receipt, byte for byte (it is stored, not re-signed).
    async with stack.http.delete(
        stack.url(f"/v1/integrations/{integration_id}"), headers=stack.auth()
    ) as response:
        assert (await response.json())["receipt"] == signed


async def test_receipts_verify_accepts_a_genuine_receipt_and_refuses_changed_ones(
    stack: Stack, tmp_path: Path
) -> None:
    _, answer, _ = await disconnected(stack)
    signed = answer["receipt"]
    genuine = tmp_path / "receipt.json"
    genuine.write_text(json.dumps(signed, indent=2))

    result = await cli(stack, tmp_path, "receipts", "verify", str(genuine))
    assert result.returncode == 0, result.stderr
    assert "genuine" in result.stdout

    forged = json.loads(json.dumps(signed))
    forged["receipt"]["revoked_at_google"] = False
    unknown = json.loads(json.dumps(signed))
    unknown["receipt"]["key_id"] = "rk_0000000000000000"
    cases = {
        "modified": (json.dumps(forged), "modified"),
        "unknown-key": (json.dumps(unknown), "unknown signing key"),
        "not-json": ("{not json", "not JSON"),
        "not-a-receipt": (json.dumps({"receipt": {}, "signature": ""}), "not a"),
        "bad-signature": (
            json.dumps({**signed, "signature": "!!"}),
            "not base64url",
        ),
    }
    for name, (text, reason) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(text)
        result = await cli(stack, tmp_path, "receipts", "verify", str(path))
        assert result.returncode == 1, (name, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and reason in lines[0], (name, lines)
        assert "Traceback" not in result.stderr

    missing = await cli(stack, tmp_path, "receipts", "verify", str(tmp_path / "nope.json"))
    assert missing.returncode != 0 and len(missing.stderr.strip().splitlines()) == 1


async def test_the_readme_script_verifies_a_receipt_with_cryptography_alone(
    stack: Stack, tmp_path: Path
) -> None:
    _, answer, _ = await disconnected(stack)
    script = tmp_path / "verify_receipt.py"
    script.write_text(readme_script())
    assert len(readme_script().strip().splitlines()) <= 10
    receipt_file, keys_file = tmp_path / "receipt.json", tmp_path / "keys.json"
    receipt_file.write_text(json.dumps(answer["receipt"]))
    keys_file.write_text(json.dumps(await receipt_keys(stack)))

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-I", str(script), str(receipt_file), str(keys_file)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    result = await asyncio.to_thread(run)
    assert result.returncode == 0 and result.stdout.strip() == "genuine", result.stderr

    forged = json.loads(json.dumps(answer["receipt"]))
    forged["receipt"]["records_purged"] += 1
    receipt_file.write_text(json.dumps(forged))
    result = await asyncio.to_thread(run)
    assert result.returncode != 0 and "InvalidSignature" in result.stderr


async def test_old_receipts_still_verify_after_the_signing_key_rotates(
    stack: Stack, tmp_path: Path
) -> None:
    _, first, _ = await disconnected(stack, user_id="u-1")
    old_key = first["receipt"]["receipt"]["key_id"]

    rotated = await cli(stack, tmp_path, "receipts", "rotate-key")
    assert rotated.returncode == 0, rotated.stderr

    # The running gateway signs the next receipt with the new key, without a restart.
    _, second, _ = await disconnected(stack, user_id="u-2")
    new_key = second["receipt"]["receipt"]["key_id"]
    assert new_key != old_key
    keys = {k["key_id"]: k for k in (await receipt_keys(stack))["keys"]}
    assert set(keys) == {old_key, new_key}
    assert keys[old_key]["retired_at"] is not None and keys[new_key]["retired_at"] is None
    for n, answer in enumerate((first, second)):
        path = tmp_path / f"r{n}.json"
        path.write_text(json.dumps(answer["receipt"]))
        result = await cli(stack, tmp_path, "receipts", "verify", str(path))
        assert result.returncode == 0, result.stderr
    # The retired key's private half is gone from the file.
    trust = json.loads(stack.settings.trust_keys_path.read_text())
    retired = [k for k in trust["signing_keys"] if k["key_id"] == old_key]
    assert "private_key" not in retired[0]


async def test_the_receipt_outlives_everything_else_about_the_user(
    stack: Stack, tmp_path: Path
) -> None:
    integration_id, answer, _ = await disconnected(stack)
    # Whatever later purges the integration's row and its audit trail, the receipt stays.
    async with stack.engine.begin() as conn:
        await conn.execute(delete(integrations).where(integrations.c.id == integration_id))
        await conn.execute(delete(audit_log).where(audit_log.c.integration_id == integration_id))
    async with stack.engine.connect() as conn:
        document = (
            await conn.execute(
                select(disconnect_receipts.c.document).where(
                    disconnect_receipts.c.integration_id == integration_id
                )
            )
        ).scalar_one()
    path = tmp_path / "stored.json"
    path.write_text(document)
    assert json.loads(document) == answer["receipt"]
    result = await cli(stack, tmp_path, "receipts", "verify", str(path))
    assert result.returncode == 0, result.stderr


async def test_receipt_keys_refuse_query_parameters(stack: Stack) -> None:
    async with stack.http.get(stack.url("/v1/receipts/keys?key_id=x")) as response:
        assert response.status == 422
        assert response.content_type == "application/problem+json"
