"""Choosing the KEK provider from GATEWAY_KEK_URI."""

from __future__ import annotations

import stat
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from vault.errors import KekProviderError
from vault.keyring import LocalKeyringProvider
from vault.providers import provider_from_uri


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_file_uri_opens_a_local_keyring(tmp_path: Path) -> None:
    path = tmp_path / "var" / "keyring.json"
    provider = await provider_from_uri(f"file:{path}")
    assert isinstance(provider, LocalKeyringProvider)
    assert provider.path == path
    assert mode_of(path) == 0o600


async def test_file_url_spellings_name_the_same_local_file(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    first = await provider_from_uri(f"file://{path}")
    second = await provider_from_uri(f"file://localhost{path}")
    assert isinstance(first, LocalKeyringProvider) and isinstance(second, LocalKeyringProvider)
    assert first.path == second.path == path
    assert first.kek_id == second.kek_id
    with pytest.raises(KekProviderError, match="remote host"):
        await provider_from_uri(f"file://elsewhere{path}")


@pytest.mark.parametrize("uri", ["vault:whatever", "http://kms.example", "nothing"])
async def test_unknown_scheme_is_named_in_the_error(uri: str) -> None:
    with pytest.raises(KekProviderError) as info:
        await provider_from_uri(uri)
    scheme = uri.split(":", 1)[0]
    assert scheme in str(info.value) or "file:PATH" in str(info.value)


async def test_file_uri_needs_a_path() -> None:
    with pytest.raises(KekProviderError, match="needs a path"):
        await provider_from_uri("file:")


class _FakeKms:
    """Just enough of a KekProvider to pass the protocol check."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.kek_id = "aws-kms:fake"

    @classmethod
    async def from_uri(cls, uri: str) -> _FakeKms:
        return cls(uri)

    async def primary_version(self) -> int:
        return 1

    async def versions(self) -> list[Any]:
        return []

    async def wrap(self, dek: bytes, aad: bytes) -> Any:
        raise NotImplementedError

    async def unwrap(self, wrapped: Any, aad: bytes) -> bytes:
        raise NotImplementedError

    async def rotate(self) -> int:
        return 2

    async def retire(self, version: int) -> None:
        return None

    async def close(self) -> None:
        return None


async def test_aws_kms_uri_is_handed_whole_to_the_kms_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = types.ModuleType("vault.awskms")
    module.AwsKmsProvider = _FakeKms  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vault.awskms", module)
    provider = await provider_from_uri("aws-kms:alias/calendar-gateway?region=eu-west-1")
    assert isinstance(provider, _FakeKms)
    assert provider.uri == "aws-kms:alias/calendar-gateway?region=eu-west-1"


async def test_a_missing_provider_module_is_a_provider_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "vault.pkcs11_provider", None)  # import fails
    with pytest.raises(KekProviderError, match="cannot be loaded") as info:
        await provider_from_uri("pkcs11:token=gw;object=kek", pkcs11_pin="s3cret-pin")
    assert "s3cret-pin" not in str(info.value)
