"""Signed destruction receipts: what a completed disconnect hands the user as proof.

A signed receipt is one JSON document::

    {"receipt": {...the fields below...}, "signature": "<base64url Ed25519 signature>"}

`signature` signs the CANONICAL JSON of `receipt`: UTF-8 of
`json.dumps(receipt, sort_keys=True, separators=(",", ":"))` (keys sorted, no whitespace,
non-ASCII escaped as \\uXXXX), with the receipt-signing key named by `receipt.key_id`, whose
public key `GET /v1/receipts/keys` lists (retired keys too, so old receipts keep verifying).

Receipt fields (no token, no key bytes, no email):
    type, version          "calendar-gateway.destruction-receipt", 1
    receipt_id             "rcp_" + 24 hex
    key_id                 the signing key
    tenant_id, integration_id
    requested_at, completed_at    RFC 3339 UTC
    revocation             how the revocation at Google ended (see disconnect.Revocation)
    revoked_at_google      whether Google confirmed the grant no longer works
    tokens_destroyed       always true
    channels_stopped, records_purged
    data_key               {"dek_id", "kek_id", "kek_version"} of the destroyed data key, or
                           null when the integration never had one

Pure code: signing takes a `Signer`, verification a list of public keys; no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from vault.trust import PublicKeyInfo, Signer, b64url, b64url_decode, verify_signature

RECEIPT_TYPE = "calendar-gateway.destruction-receipt"
RECEIPT_VERSION = 1
# A receipt file larger than this is refused unread (receipts are well under 2 KB).
MAX_RECEIPT_BYTES = 64 * 1024


def canonical_json(value: dict[str, Any]) -> bytes:
    """The bytes a receipt's signature covers (see the module doc)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True)
class SignedReceipt:
    """A receipt and its signature, as stored, answered and (later) sent in webhooks."""

    receipt: dict[str, Any]
    signature: str

    @property
    def receipt_id(self) -> str:
        return str(self.receipt["receipt_id"])

    @property
    def key_id(self) -> str:
        return str(self.receipt["key_id"])

    def to_public(self) -> dict[str, Any]:
        return {"receipt": dict(self.receipt), "signature": self.signature}

    def to_json(self) -> str:
        """The document as stored and as a user's receipt file holds it."""
        return json.dumps(self.to_public(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> SignedReceipt:
        """Parse a stored receipt (raises InvalidReceipt for anything malformed)."""
        return parse_receipt(text.encode("utf-8"))


def sign_receipt(fields: dict[str, Any], signer: Signer) -> SignedReceipt:
    """Add type, version and key id to `fields` and sign the result."""
    receipt = {
        **fields,
        "type": RECEIPT_TYPE,
        "version": RECEIPT_VERSION,
        "key_id": signer.key_id,
    }
    return SignedReceipt(receipt, b64url(signer.sign(canonical_json(receipt))))


class InvalidReceipt(Exception):
    """A receipt that does not verify; the message is one line saying why."""


def parse_receipt(raw: bytes) -> SignedReceipt:
    """The document's shape (not its signature); InvalidReceipt when it is not a receipt."""
    if len(raw) > MAX_RECEIPT_BYTES:
        raise InvalidReceipt(f"larger than {MAX_RECEIPT_BYTES} bytes: not a receipt")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidReceipt("not JSON") from None
    if not isinstance(doc, dict) or set(doc) != {"receipt", "signature"}:
        raise InvalidReceipt('not a signed receipt: expected {"receipt": ..., "signature": ...}')
    receipt, signature = doc["receipt"], doc["signature"]
    if not isinstance(receipt, dict) or not isinstance(signature, str):
        raise InvalidReceipt("not a signed receipt: receipt must be an object, signature a string")
    if receipt.get("type") != RECEIPT_TYPE or receipt.get("version") != RECEIPT_VERSION:
        raise InvalidReceipt(f"not a {RECEIPT_TYPE} of version {RECEIPT_VERSION}")
    if not isinstance(receipt.get("key_id"), str):
        raise InvalidReceipt("the receipt names no signing key (key_id)")
    return SignedReceipt(receipt, signature)


def verify_receipt(raw: bytes, keys: Iterable[PublicKeyInfo]) -> SignedReceipt:
    """The receipt in `raw` if its signature verifies under the listed key it names;
    InvalidReceipt otherwise (modified, unknown key, not a receipt)."""
    signed = parse_receipt(raw)
    key = next((k for k in keys if k.key_id == signed.key_id), None)
    if key is None:
        raise InvalidReceipt(f"unknown signing key {signed.key_id[:40]!r}")
    try:
        signature = b64url_decode(signed.signature)
    except ValueError:
        raise InvalidReceipt("the signature is not base64url") from None
    if not verify_signature(key.public_key, signature, canonical_json(signed.receipt)):
        raise InvalidReceipt(
            f"signature does not verify under key {key.key_id}: the receipt was modified"
        )
    return signed
