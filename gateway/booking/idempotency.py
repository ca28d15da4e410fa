"""Idempotent booking: the same request, retried after any failure, books exactly one event.

Two pure functions carry it:

* `google_event_id(tenant, integration, key)` derives the Google event id from the caller's
  Idempotency-Key. The id is sent on insert, so a retry after a lost response (or after a crash
  between Google's success and our bookkeeping) asks Google to create the SAME id again and gets
  409 `duplicate`, which means "already created", instead of a second event. Google event ids
  must use base32hex (a-v, 0-9) and be 5 to 1024 characters; ours are 52.
* `body_fingerprint(body)` is a digest of the request body in canonical JSON, so a key reused
  with a different body is recognised (422 `idempotency_key_reused`) rather than replayed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

# Keys are the caller's: printable ASCII, bounded, so they are safe in logs and in a digest.
_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")
_DOMAIN = b"calendar-gateway/booking-id/v1\x00"


def check_idempotency_key(key: str) -> str:
    """The key, or ValueError naming the rule it breaks."""
    if not _KEY.match(key):
        raise ValueError("Idempotency-Key must be 1-200 printable ASCII characters, no spaces")
    return key


def google_event_id(tenant_id: str, integration_id: str, idempotency_key: str) -> str:
    """A stable base32hex event id for (tenant, integration, key): 52 characters of a-v0-9."""
    check_idempotency_key(idempotency_key)
    digest = hashlib.sha256(
        _DOMAIN
        + b"\x00".join(
            part.encode("utf-8") for part in (tenant_id, integration_id, idempotency_key)
        )
    ).digest()
    # RFC 4648 base32hex uses 0-9A-V: exactly Google's alphabet once lower-cased.
    return base64.b32hexencode(digest).decode("ascii").rstrip("=").lower()


def body_fingerprint(body: Mapping[str, Any]) -> str:
    """SHA-256 of the body as canonical JSON (sorted keys, no insignificant whitespace)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
