"""The trust keys file (receipt-signing and journal keys) on an HSM or KMS: its secrets are
wrapped by that provider, reopen with it, and survive a KEK rotation and retirement."""

from __future__ import annotations

import json
from pathlib import Path

from tests.vault_providers.providers import ProviderFactory
from vault.trust import TrustKeys, verify_signature


async def test_trust_keys_wrapped_by_the_provider_survive_rotation_and_retirement(
    open_provider: ProviderFactory, tmp_path: Path
) -> None:
    path = tmp_path / "trust-keys.json"
    provider = await open_provider()
    trust = await TrustKeys.open(path, provider)
    signer = await trust.signer()
    doc = json.loads(path.read_text())
    assert doc["journal_key"]["kek_id"] == provider.kek_id

    await provider.rotate()
    assert await trust.rewrap() == 2
    await provider.retire(1)

    reopened = await TrustKeys.open(path, await open_provider())
    assert reopened.journal_key == trust.journal_key
    [info] = reopened.public_keys()
    again = await reopened.signer()
    assert again.key_id == signer.key_id
    assert verify_signature(info.public_key, again.sign(b"receipt"), b"receipt")
