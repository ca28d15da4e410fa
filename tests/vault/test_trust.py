"""The trust keys file: created 0600 with its secrets wrapped by the KEK provider, refused when
unsafe or corrupt, rotation that keeps old public keys, and KEK rotation that never strands it."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from vault.errors import InvalidCiphertext, TrustKeyError
from vault.keyring import LocalKeyringProvider
from vault.trust import TrustKeys, read_public_keys, verify_signature


async def open_pair(tmp_path: Path) -> tuple[LocalKeyringProvider, TrustKeys]:
    provider = await LocalKeyringProvider.open(tmp_path / "keyring.json")
    return provider, await TrustKeys.open(tmp_path / "trust-keys.json", provider)


async def test_created_owner_only_with_every_secret_wrapped(tmp_path: Path) -> None:
    _, trust = await open_pair(tmp_path)
    path = tmp_path / "trust-keys.json"
    assert path.stat().st_mode & 0o777 == 0o600
    raw = path.read_bytes()
    assert trust.journal_key not in raw and base64.b64encode(trust.journal_key) not in raw
    signer = await trust.signer()
    [info] = trust.public_keys()
    assert info.key_id == signer.key_id and info.retired_at is None
    assert verify_signature(info.public_key, signer.sign(b"m"), b"m")
    assert signer.key_id in repr(signer) and "private" not in repr(signer).lower()
    # Reopened by another process: the same keys.
    again = await TrustKeys.open(path, await LocalKeyringProvider.open(tmp_path / "keyring.json"))
    assert again.journal_key == trust.journal_key
    assert (await again.signer()).key_id == signer.key_id


async def test_another_keyring_cannot_open_it(tmp_path: Path) -> None:
    await open_pair(tmp_path)
    other = await LocalKeyringProvider.open(tmp_path / "other-keyring.json")
    with pytest.raises(InvalidCiphertext):
        await TrustKeys.open(tmp_path / "trust-keys.json", other)


async def test_unsafe_or_corrupt_files_are_refused_naming_the_file(tmp_path: Path) -> None:
    provider, _ = await open_pair(tmp_path)
    path = tmp_path / "trust-keys.json"
    path.chmod(0o644)
    with pytest.raises(TrustKeyError, match=f"trust keys file {path}: permissions 0644"):
        await TrustKeys.open(path, provider)
    path.chmod(0o600)
    doc = json.loads(path.read_text())
    doc["signing_keys"][0]["public_key"] = "!!"
    path.write_text(json.dumps(doc))
    with pytest.raises(TrustKeyError, match=r"is not an Ed25519 public key|is malformed"):
        await TrustKeys.open(path, provider)
    path.write_text("{")
    with pytest.raises(TrustKeyError, match="not valid JSON"):
        read_public_keys(path)


async def test_rotation_retires_the_old_key_and_keeps_it_listed(tmp_path: Path) -> None:
    _, trust = await open_pair(tmp_path)
    old = await trust.signer()

    new = await trust.rotate_signing_key()

    assert (await trust.signer()).key_id == new.key_id != old.key_id
    listed = read_public_keys(tmp_path / "trust-keys.json")
    assert [k.key_id for k in listed] == [old.key_id, new.key_id]
    assert listed[0].retired_at is not None and listed[1].retired_at is None


async def test_kek_rotation_then_retirement_does_not_strand_the_secrets(tmp_path: Path) -> None:
    provider, trust = await open_pair(tmp_path)
    journal_key = trust.journal_key
    await provider.rotate()

    assert await trust.rewrap() == 2  # the journal key and the current signing key
    await provider.retire(1)

    reopened = await TrustKeys.open(tmp_path / "trust-keys.json", provider)
    assert reopened.journal_key == journal_key
    doc = json.loads((tmp_path / "trust-keys.json").read_text())
    assert doc["journal_key"]["kek_version"] == 2
