"""PKCS#11-specific behaviour against a real SoftHSM2 token (the contract suite covers the rest)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pkcs11
import pytest
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.exceptions import AttributeSensitive, KeyUnextractable, PKCS11Error

from tests.vault_providers.providers import SoftHsmToken, unique_name
from vault.errors import InvalidCiphertext, KekProviderError
from vault.pkcs11_provider import TOMBSTONE_APPLICATION, Pkcs11Provider

OpenPkcs11 = Callable[..., Awaitable[Pkcs11Provider]]
AAD = b"tenant-1/integration-42"


@pytest.fixture
def token_session(softhsm_token: SoftHsmToken) -> Iterator[Any]:
    """A session of our own on the test token, to inspect what the provider left in it.

    Opened without a PIN: PKCS#11 login is per process, and the provider under test has logged
    this process in already.
    """
    token = pkcs11.lib(softhsm_token.module_path).get_token(token_label=softhsm_token.label)
    session = token.open(rw=True)
    yield session
    session.close()


def objects_labelled(session: Any, label: str, object_class: ObjectClass) -> list[Any]:
    return list(session.get_objects({Attribute.CLASS: object_class, Attribute.LABEL: label}))


def kek_name(provider: Pkcs11Provider) -> str:
    return provider.kek_id.rpartition("object=")[2]


async def test_kek_is_generated_in_the_token_and_never_extractable(
    open_pkcs11: OpenPkcs11, token_session: Any
) -> None:
    provider = await open_pkcs11()
    [key] = objects_labelled(token_session, f"{kek_name(provider)}-v1", ObjectClass.SECRET_KEY)

    assert key.key_type == KeyType.AES
    assert key[Attribute.VALUE_LEN] == 32
    assert key[Attribute.TOKEN] is True  # survives the session: a token object
    assert key[Attribute.LOCAL] is True  # generated inside the token, never imported
    assert key[Attribute.SENSITIVE] is True
    assert key[Attribute.EXTRACTABLE] is False
    assert key[Attribute.NEVER_EXTRACTABLE] is True
    with pytest.raises(AttributeSensitive):
        key[Attribute.VALUE]
    # Not even wrapped under another token key can it leave.
    wrapping_key = token_session.generate_key(
        KeyType.AES, 256, capabilities=MechanismFlag.WRAP | MechanismFlag.UNWRAP
    )
    with pytest.raises(KeyUnextractable):
        wrapping_key.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP_PAD)


async def test_wrapped_layout_is_format_iv_ciphertext_tag(open_pkcs11: OpenPkcs11) -> None:
    provider = await open_pkcs11()
    wrapped = await provider.wrap(os.urandom(32), AAD)
    assert wrapped.wrapped[0] == 0x01
    assert len(wrapped.wrapped) == 1 + 12 + 32 + 16


async def test_every_single_flipped_bit_is_detected(open_pkcs11: OpenPkcs11) -> None:
    provider = await open_pkcs11()
    wrapped = await provider.wrap(os.urandom(32), AAD)
    for i in range(len(wrapped.wrapped)):
        blob = bytearray(wrapped.wrapped)
        blob[i] ^= 0x80
        with pytest.raises(InvalidCiphertext):
            await provider.unwrap(dataclasses.replace(wrapped, wrapped=bytes(blob)), AAD)


async def test_retire_destroys_the_key_and_leaves_a_tombstone(
    open_pkcs11: OpenPkcs11, token_session: Any
) -> None:
    provider = await open_pkcs11()
    await provider.rotate()
    await provider.retire(1)
    label = f"{kek_name(provider)}-v1"
    assert objects_labelled(token_session, label, ObjectClass.SECRET_KEY) == []
    [tombstone] = objects_labelled(token_session, label, ObjectClass.DATA)
    assert tombstone[Attribute.APPLICATION] == TOMBSTONE_APPLICATION
    assert tombstone[Attribute.VALUE] == b""


async def test_duplicate_keys_for_one_version_still_unwrap(
    open_pkcs11: OpenPkcs11, token_session: Any
) -> None:
    # What two replicas creating version 1 at the same moment would leave behind.
    provider = await open_pkcs11()
    dek = os.urandom(32)
    before = await provider.wrap(dek, AAD)
    token_session.generate_key(
        KeyType.AES,
        256,
        id=b"\x00" * 16,  # sorts first, so new wraps move to this key
        label=f"{kek_name(provider)}-v1",
        store=True,
        capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
        template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
    )
    after = await provider.wrap(dek, AAD)
    assert await provider.unwrap(before, AAD) == dek
    assert await provider.unwrap(after, AAD) == dek
    assert [v.version for v in await provider.versions()] == [1]


async def test_concurrent_calls_from_two_providers_are_serialised_safely(
    open_pkcs11: OpenPkcs11,
) -> None:
    first, second = await open_pkcs11(), await open_pkcs11()
    deks = [os.urandom(32) for _ in range(40)]
    wrapped = await asyncio.gather(
        *(p.wrap(dek, AAD) for p, dek in zip([first, second] * 20, deks, strict=True))
    )
    opened = await asyncio.gather(
        *(p.unwrap(w, AAD) for p, w in zip([second, first] * 20, wrapped, strict=True))
    )
    assert opened == deks


async def test_pin_from_pin_source_env(
    softhsm_token: SoftHsmToken, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_KEK_PIN", softhsm_token.pin)
    provider = await Pkcs11Provider.from_uri(
        softhsm_token.uri(unique_name(), **{"pin-source": "env:TEST_KEK_PIN"})
    )
    try:
        assert await provider.primary_version() == 1
    finally:
        await provider.close()


async def test_pin_from_pin_source_file(softhsm_token: SoftHsmToken, tmp_path: Path) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text(softhsm_token.pin + "\n")
    provider = await Pkcs11Provider.from_uri(
        softhsm_token.uri(unique_name(), **{"pin-source": f"file:{pin_file}"})
    )
    try:
        assert await provider.primary_version() == 1
    finally:
        await provider.close()


@pytest.mark.parametrize(
    ("query", "pin", "message"),
    [
        ({}, None, "no PKCS#11 PIN"),
        ({"pin-value": "1234"}, None, "must not carry pin-value"),
        ({"pin-source": "env:TEST_KEK_PIN"}, "also-a-pin", "give the PKCS#11 PIN once"),
        ({"pin-source": "env:NOT_SET_ANYWHERE"}, None, "NOT_SET_ANYWHERE is not set"),
        ({"slot": "3"}, "x", "unsupported attributes"),
    ],
)
async def test_misconfiguration_is_reported_without_the_pin(
    softhsm_token: SoftHsmToken,
    monkeypatch: pytest.MonkeyPatch,
    query: dict[str, str],
    pin: str | None,
    message: str,
) -> None:
    monkeypatch.setenv("TEST_KEK_PIN", softhsm_token.pin)
    with pytest.raises(KekProviderError, match=message) as caught:
        await Pkcs11Provider.from_uri(softhsm_token.uri(unique_name(), **query), pin=pin)
    assert softhsm_token.pin not in str(caught.value)
    assert "1234" not in str(caught.value)


async def test_wrong_pin_unknown_token_and_bad_module_are_provider_errors(
    softhsm_token: SoftHsmToken,
) -> None:
    # Another open provider would make any PIN "already logged in"; this test opens none.
    wrong_pin = "wrong-pin-0000"
    with pytest.raises(KekProviderError, match="rejected the PIN") as caught:
        await Pkcs11Provider.from_uri(softhsm_token.uri(unique_name()), pin=wrong_pin)
    assert wrong_pin not in str(caught.value)

    no_token = softhsm_token.uri(unique_name()).replace(softhsm_token.label, "no-such-token")
    with pytest.raises(KekProviderError, match="no PKCS#11 token"):
        await Pkcs11Provider.from_uri(no_token, pin=softhsm_token.pin)

    bad_module = "pkcs11:token=t;object=o?module-path=/nonexistent/libp11.so"
    with pytest.raises(KekProviderError, match="cannot load PKCS#11 module"):
        await Pkcs11Provider.from_uri(bad_module, pin=softhsm_token.pin)


async def test_repr_and_errors_never_show_the_pin(
    open_pkcs11: OpenPkcs11, softhsm_token: SoftHsmToken
) -> None:
    provider = await open_pkcs11()
    assert softhsm_token.pin not in repr(provider)
    assert softhsm_token.pin not in str(vars(provider))


async def test_closed_provider_refuses_work(open_pkcs11: OpenPkcs11) -> None:
    provider = await open_pkcs11()
    await provider.close()
    await provider.close()  # idempotent
    with pytest.raises(KekProviderError, match="closed"):
        await provider.wrap(os.urandom(32), AAD)


def test_pkcs11_errors_carry_no_detail() -> None:
    # The provider puts type(exc).__name__ in messages; python-pkcs11's errors carry no inputs.
    assert str(PKCS11Error()) == ""
