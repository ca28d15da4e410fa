"""Standard Webhooks `v1` signatures: secrets and the `webhook-*` headers. Pure.

The signing itself is the `standardwebhooks` package's (the reference implementation receivers
verify with): `v1,` + base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")). During
a secret rotation every live secret signs, and the signatures go space-separated in one header;
receivers accept a message when any of them matches.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"  # noqa: S105 (the format's prefix, no secret)
SECRET_BYTES = 32  # 256 bits (the specification asks for at least 192)


def new_secret(token_bytes: Callable[[int], bytes]) -> str:
    """A fresh `whsec_...` secret from `token_bytes` (e.g. `secrets.token_bytes`)."""
    return SECRET_PREFIX + base64.b64encode(token_bytes(SECRET_BYTES)).decode("ascii")


def signature_header(secrets: Sequence[str], msg_id: str, timestamp_s: int, body: bytes) -> str:
    """The `webhook-signature` value: one `v1,<sig>` per secret, space separated."""
    at = datetime.fromtimestamp(timestamp_s, tz=UTC)
    return " ".join(Webhook(secret).sign(msg_id, at, body) for secret in secrets)


def signed_headers(
    secrets: Sequence[str], msg_id: str, timestamp_s: int, body: bytes
) -> dict[str, str]:
    """Every header a delivery attempt sends besides the content type."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp_s),
        "webhook-signature": signature_header(secrets, msg_id, timestamp_s, body),
    }
