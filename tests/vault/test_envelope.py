"""The byte layouts of vault.envelope: round trips, tampering, truncation, context binding and
published vectors that break if the format changes."""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from vault import envelope
from vault.envelope import SealContext
from vault.errors import InvalidCiphertext

DEK = bytes(range(32))
DEK_ID = bytes.fromhex("00112233445566778899aabbccddeeff")
NONCE = bytes.fromhex("a0a1a2a3a4a5a6a7a8a9aaab")
CTX = SealContext("tenant-1", "integration-1", "refresh_token")
PLAINTEXT = b"1//0refresh-token-example"

# Published vectors. If one of these changes, every stored token becomes unreadable: bump the
# version byte and keep reading 0x01 instead of editing the expected value.
SEALED_VECTOR = (
    "01"  # version
    "00112233445566778899aabbccddeeff"  # dek_id
    "a0a1a2a3a4a5a6a7a8a9aaab"  # nonce
    "d737531d37ae64cd0716effe7315abbb1e813c68f3da3200f9"  # ciphertext (25 bytes)
    "118920b484f887a9312f78bb5c6fc546"  # tag
)
KEK = b"\x42" * 32
KEK_VERSION = 3
WRAP_NONCE = bytes.fromhex("b0b1b2b3b4b5b6b7b8b9babb")
WRAPPED_VECTOR = (
    "01"  # version
    "b0b1b2b3b4b5b6b7b8b9babb"  # nonce
    "2e82aa03cfc3bc1aa67a33bc2659936075ffc6ae367eba708b1a86f8dc8e7280"  # wrapped DEK
    "5307e50edc83841aa0d70038c54249df"  # tag
)


def fixed(value: bytes) -> envelope.Rng:
    def rng(n: int) -> bytes:
        assert n == len(value)
        return value

    return rng


def sealed() -> bytes:
    return envelope.seal(DEK, DEK_ID, CTX, PLAINTEXT, fixed(NONCE))


def wrapped() -> bytes:
    aad = envelope.dek_binding("tenant-1", "integration-1", DEK_ID)
    return envelope.wrap_dek(AESGCM(KEK), KEK_VERSION, DEK, aad, fixed(WRAP_NONCE))


def unwrap(blob: bytes) -> bytes:
    aad = envelope.dek_binding("tenant-1", "integration-1", DEK_ID)
    return envelope.unwrap_dek(AESGCM(KEK), KEK_VERSION, blob, aad)


# -- published vectors ------------------------------------------------------------------------


def test_sealed_blob_matches_published_vector() -> None:
    assert sealed().hex() == SEALED_VECTOR
    assert envelope.open_blob(DEK, CTX, bytes.fromhex(SEALED_VECTOR)) == PLAINTEXT


def test_wrapped_dek_matches_published_vector() -> None:
    assert wrapped().hex() == WRAPPED_VECTOR
    assert unwrap(bytes.fromhex(WRAPPED_VECTOR)) == DEK


def _lp(value: str) -> bytes:
    raw = value.encode()
    return struct.pack(">H", len(raw)) + raw


def test_sealed_blob_is_exactly_the_documented_layout() -> None:
    """Rebuild the blob from the module docstring alone, with plain AESGCM."""
    header = b"\x01" + DEK_ID
    aad = b"cg-vault/token\x00" + header + _lp("tenant-1") + _lp("integration-1")
    aad += _lp("refresh_token")
    expected = header + NONCE + AESGCM(DEK).encrypt(NONCE, PLAINTEXT, aad)
    assert sealed() == expected
    assert len(sealed()) == envelope.BLOB_OVERHEAD + len(PLAINTEXT)


def test_wrapped_dek_is_exactly_the_documented_layout() -> None:
    binding = b"cg-vault/dek\x00" + _lp("tenant-1") + _lp("integration-1") + DEK_ID
    aad = b"cg-vault/kek\x00\x01" + struct.pack(">I", KEK_VERSION)
    aad += struct.pack(">H", len(binding)) + binding
    expected = b"\x01" + WRAP_NONCE + AESGCM(KEK).encrypt(WRAP_NONCE, DEK, aad)
    assert wrapped() == expected
    assert len(expected) == envelope.WRAPPED_DEK_LEN


# -- round trips ------------------------------------------------------------------------------

field_text = st.text(min_size=1, max_size=envelope.MAX_FIELD_CHARS).filter(
    lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s)
)
contexts = st.builds(SealContext, field_text, field_text, field_text)


@settings(max_examples=150, deadline=None)
@given(ctx=contexts, plaintext=st.binary(max_size=4096), dek=st.binary(min_size=32, max_size=32))
def test_any_payload_and_context_round_trips(
    ctx: SealContext, plaintext: bytes, dek: bytes
) -> None:
    blob = envelope.seal(dek, DEK_ID, ctx, plaintext)
    assert envelope.blob_dek_id(blob) == DEK_ID
    assert envelope.open_blob(dek, ctx, blob) == plaintext


@settings(max_examples=100, deadline=None)
@given(ctx=contexts, other=contexts, plaintext=st.binary(max_size=256))
def test_blob_opens_only_under_its_own_context(
    ctx: SealContext, other: SealContext, plaintext: bytes
) -> None:
    blob = envelope.seal(DEK, DEK_ID, ctx, plaintext)
    if other == ctx:
        assert envelope.open_blob(DEK, other, blob) == plaintext
    else:
        with pytest.raises(InvalidCiphertext):
            envelope.open_blob(DEK, other, blob)


def test_each_seal_uses_a_fresh_nonce() -> None:
    a = envelope.seal(DEK, DEK_ID, CTX, PLAINTEXT)
    b = envelope.seal(DEK, DEK_ID, CTX, PLAINTEXT)
    assert a[17:29] != b[17:29]
    assert a != b


# -- tampering and truncation -----------------------------------------------------------------


def test_flipping_any_byte_of_a_sealed_blob_fails() -> None:
    blob = sealed()
    for position in range(len(blob)):
        for flip in (0x01, 0x80):
            tampered = bytearray(blob)
            tampered[position] ^= flip
            with pytest.raises(InvalidCiphertext) as info:
                envelope.open_blob(DEK, CTX, bytes(tampered))
            assert str(info.value) == "ciphertext could not be opened"


def test_every_truncation_of_a_sealed_blob_fails() -> None:
    blob = sealed()
    for length in range(len(blob)):
        with pytest.raises(InvalidCiphertext):
            envelope.open_blob(DEK, CTX, blob[:length])


def test_appended_bytes_fail() -> None:
    with pytest.raises(InvalidCiphertext):
        envelope.open_blob(DEK, CTX, sealed() + b"\x00")


def test_flipping_any_byte_of_a_wrapped_dek_fails() -> None:
    blob = wrapped()
    for position in range(len(blob)):
        tampered = bytearray(blob)
        tampered[position] ^= 0x01
        with pytest.raises(InvalidCiphertext):
            unwrap(bytes(tampered))


def test_every_truncation_of_a_wrapped_dek_fails() -> None:
    blob = wrapped()
    for length in range(len(blob)):
        with pytest.raises(InvalidCiphertext):
            unwrap(blob[:length])


def test_unknown_version_byte_is_refused_with_its_reason() -> None:
    blob = bytearray(sealed())
    blob[0] = 0x02
    with pytest.raises(InvalidCiphertext) as info:
        envelope.open_blob(DEK, CTX, bytes(blob))
    assert info.value.reason == "unknown_version"


def test_wrong_dek_fails() -> None:
    with pytest.raises(InvalidCiphertext) as info:
        envelope.open_blob(bytes(32), CTX, sealed())
    assert info.value.reason == "auth_failed"


# -- context binding --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "other",
    [
        SealContext("tenant-2", "integration-1", "refresh_token"),
        SealContext("tenant-1", "integration-2", "refresh_token"),
        SealContext("tenant-1", "integration-1", "access_token"),
    ],
    ids=["other-tenant", "other-integration", "other-purpose"],
)
def test_blob_fails_under_another_context(other: SealContext) -> None:
    with pytest.raises(InvalidCiphertext):
        envelope.open_blob(DEK, other, sealed())


def test_context_encoding_is_unambiguous() -> None:
    # Without length prefixes these two would produce the same AAD.
    a = SealContext("ab", "c", "refresh_token")
    b = SealContext("a", "bc", "refresh_token")
    assert a.encode() != b.encode()
    blob = envelope.seal(DEK, DEK_ID, a, PLAINTEXT)
    with pytest.raises(InvalidCiphertext):
        envelope.open_blob(DEK, b, blob)


def test_wrapped_dek_is_bound_to_its_row_and_version() -> None:
    blob = wrapped()
    other_row = envelope.dek_binding("tenant-1", "integration-2", DEK_ID)
    with pytest.raises(InvalidCiphertext):
        envelope.unwrap_dek(AESGCM(KEK), KEK_VERSION, blob, other_row)
    own_row = envelope.dek_binding("tenant-1", "integration-1", DEK_ID)
    with pytest.raises(InvalidCiphertext):
        envelope.unwrap_dek(AESGCM(KEK), KEK_VERSION + 1, blob, own_row)


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tenant", "integration", "purpose"),
    [
        ("", "i", "refresh_token"),
        ("t", "", "refresh_token"),
        ("t", "i", ""),
        ("t" * 65, "i", "refresh_token"),
        ("t", "i" * 65, "refresh_token"),
        ("t", "i", "p" * 65),
        ("t\ud800", "i", "refresh_token"),
    ],
)
def test_seal_context_rejects_empty_oversized_or_broken_fields(
    tenant: str, integration: str, purpose: str
) -> None:
    with pytest.raises(ValueError):
        SealContext(tenant, integration, purpose)


def test_seal_context_rejects_non_text() -> None:
    with pytest.raises(TypeError):
        SealContext(b"t", "i", "refresh_token")  # type: ignore[arg-type]


def test_a_short_nonce_from_a_broken_rng_is_refused() -> None:
    with pytest.raises(ValueError):
        envelope.seal(DEK, DEK_ID, CTX, PLAINTEXT, lambda n: b"\x00" * (n - 1))


def test_dek_ids_sort_by_creation_time_and_stay_unpredictable() -> None:
    # Rewrap walks keys in dek_id order; time-first ids keep that close to insertion order.
    earlier = envelope.new_dek_id(fixed(b"\xff" * 10), now_ms=1_700_000_000_000)
    later = envelope.new_dek_id(fixed(b"\x00" * 10), now_ms=1_700_000_000_001)
    assert earlier.hex() < later.hex()
    assert earlier[:6] == (1_700_000_000_000).to_bytes(6, "big")
    same_ms = {envelope.new_dek_id(now_ms=1_700_000_000_000) for _ in range(1000)}
    assert len(same_ms) == 1000
    with pytest.raises(ValueError):
        envelope.new_dek_id(now_ms=-1)
