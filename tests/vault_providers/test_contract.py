"""The behaviour every KEK provider owes the vault, run against SoftHSM2 and moto's KMS alike."""

from __future__ import annotations

import dataclasses
import os

import pytest

from tests.vault_providers.providers import ProviderFactory
from vault.errors import InvalidCiphertext, RetireRefused
from vault.kek import KekProvider, WrappedKey

AAD = b"tenant-1/integration-42"


def flip_last_byte(wrapped: WrappedKey) -> WrappedKey:
    blob = bytearray(wrapped.wrapped)
    blob[-1] ^= 0x01
    return dataclasses.replace(wrapped, wrapped=bytes(blob))


async def test_satisfies_the_protocol_and_starts_with_version_1(
    open_provider: ProviderFactory,
) -> None:
    provider = await open_provider()
    assert isinstance(provider, KekProvider)
    assert await provider.primary_version() == 1
    assert [(v.version, v.state) for v in await provider.versions()] == [(1, "primary")]


async def test_round_trip(open_provider: ProviderFactory) -> None:
    provider = await open_provider()
    dek = os.urandom(32)
    wrapped = await provider.wrap(dek, AAD)
    assert wrapped.kek_id == provider.kek_id
    assert wrapped.kek_version == 1
    assert dek not in wrapped.wrapped
    assert await provider.unwrap(wrapped, AAD) == dek


async def test_an_empty_dek_is_a_programming_error(open_provider: ProviderFactory) -> None:
    provider = await open_provider()
    with pytest.raises(ValueError, match="empty"):
        await provider.wrap(b"", AAD)


async def test_two_wraps_of_one_dek_differ(open_provider: ProviderFactory) -> None:
    provider = await open_provider()
    dek = os.urandom(32)
    assert (await provider.wrap(dek, AAD)).wrapped != (await provider.wrap(dek, AAD)).wrapped


async def test_wrapped_key_is_bound_to_its_aad(open_provider: ProviderFactory) -> None:
    provider = await open_provider()
    wrapped = await provider.wrap(os.urandom(32), AAD)
    with pytest.raises(InvalidCiphertext):
        await provider.unwrap(wrapped, b"tenant-1/integration-43")
    with pytest.raises(InvalidCiphertext):
        await provider.unwrap(wrapped, b"")


async def test_tampered_or_truncated_wrapped_key_is_refused(open_provider: ProviderFactory) -> None:
    provider = await open_provider()
    wrapped = await provider.wrap(os.urandom(32), AAD)
    for bad in (
        flip_last_byte(wrapped),
        dataclasses.replace(wrapped, wrapped=wrapped.wrapped[:-1]),
        dataclasses.replace(wrapped, wrapped=b""),
    ):
        with pytest.raises(InvalidCiphertext):
            await provider.unwrap(bad, AAD)


async def test_unknown_version_and_foreign_kek_are_refused(open_provider: ProviderFactory) -> None:
    provider = await open_provider()
    wrapped = await provider.wrap(os.urandom(32), AAD)
    with pytest.raises(InvalidCiphertext):
        await provider.unwrap(dataclasses.replace(wrapped, kek_version=7), AAD)
    with pytest.raises(InvalidCiphertext):
        await provider.unwrap(dataclasses.replace(wrapped, kek_id="local:keyring"), AAD)


async def test_rotate_moves_new_wraps_while_old_ones_still_unwrap(
    open_provider: ProviderFactory,
) -> None:
    provider = await open_provider()
    old_dek = os.urandom(32)
    old = await provider.wrap(old_dek, AAD)

    assert await provider.rotate() == 2
    assert await provider.primary_version() == 2
    new_dek = os.urandom(32)
    new = await provider.wrap(new_dek, AAD)

    assert (old.kek_version, new.kek_version) == (1, 2)
    assert await provider.unwrap(old, AAD) == old_dek
    assert await provider.unwrap(new, AAD) == new_dek
    assert [(v.version, v.state) for v in await provider.versions()] == [
        (1, "active"),
        (2, "primary"),
    ]


async def test_a_wrapped_key_relabelled_to_another_version_is_refused(
    open_provider: ProviderFactory,
) -> None:
    provider = await open_provider()
    v1 = await provider.wrap(os.urandom(32), AAD)
    await provider.rotate()
    with pytest.raises(InvalidCiphertext):
        await provider.unwrap(dataclasses.replace(v1, kek_version=2), AAD)


async def test_retired_version_no_longer_unwraps(open_provider: ProviderFactory) -> None:
    provider = await open_provider()
    v1 = await provider.wrap(os.urandom(32), AAD)
    await provider.rotate()
    v2_dek = os.urandom(32)
    v2 = await provider.wrap(v2_dek, AAD)

    await provider.retire(1)

    with pytest.raises(InvalidCiphertext):
        await provider.unwrap(v1, AAD)
    assert await provider.unwrap(v2, AAD) == v2_dek
    assert [(v.version, v.state) for v in await provider.versions()] == [
        (1, "retired"),
        (2, "primary"),
    ]
    await provider.retire(1)  # idempotent
    assert await provider.rotate() == 3  # a retired number is never reused


async def test_retiring_the_primary_is_refused(open_provider: ProviderFactory) -> None:
    provider = await open_provider()
    with pytest.raises(RetireRefused):
        await provider.retire(1)
    await provider.rotate()
    with pytest.raises(RetireRefused):
        await provider.retire(2)
    dek = os.urandom(32)
    assert await provider.unwrap(await provider.wrap(dek, AAD), AAD) == dek


async def test_a_second_instance_sees_the_same_versions_and_keys(
    open_provider: ProviderFactory,
) -> None:
    first = await open_provider()
    v1_dek = os.urandom(32)
    v1 = await first.wrap(v1_dek, AAD)
    await first.rotate()
    v2_dek = os.urandom(32)
    v2 = await first.wrap(v2_dek, AAD)

    second = await open_provider()
    assert second.kek_id == first.kek_id
    assert await second.versions() == await first.versions()
    assert await second.primary_version() == 2
    assert await second.unwrap(v1, AAD) == v1_dek
    assert await second.unwrap(v2, AAD) == v2_dek

    await second.retire(1)
    third = await open_provider()
    with pytest.raises(InvalidCiphertext):
        await third.unwrap(v1, AAD)


async def test_repr_names_the_kek_only(open_provider: ProviderFactory) -> None:
    provider = await open_provider()
    text = repr(provider)
    assert provider.kek_id in text
    for secret in ("pin", "testing", "secret"):
        assert secret not in text.lower()
