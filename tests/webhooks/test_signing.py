"""Standard Webhooks signatures: the specification's published example, and rotation's two
signatures each verified by the reference library."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from gateway.webhooks.signing import new_secret, signature_header, signed_headers

# The example the Standard Webhooks specification publishes (standardwebhooks.com, Apache-2.0).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TS = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_specifications_example_vector() -> None:
    assert signature_header([SPEC_SECRET], SPEC_ID, SPEC_TS, SPEC_BODY) == SPEC_SIGNATURE


def test_a_changed_byte_or_id_gives_another_signature() -> None:
    assert signature_header([SPEC_SECRET], SPEC_ID, SPEC_TS, b'{"test": 2432232315}') != (
        SPEC_SIGNATURE
    )
    assert signature_header([SPEC_SECRET], SPEC_ID + "x", SPEC_TS, SPEC_BODY) != SPEC_SIGNATURE


def test_new_secrets_are_whsec_with_256_random_bits() -> None:
    secret = new_secret(lambda n: bytes(range(n)))
    assert secret.startswith("whsec_")
    assert base64.b64decode(secret.removeprefix("whsec_")) == bytes(range(32))


def test_during_a_rotation_both_secrets_sign_and_each_verifies() -> None:
    old, new = new_secret(lambda n: b"\x01" * n), new_secret(lambda n: b"\x02" * n)
    now = int(datetime.now(UTC).timestamp())
    headers = signed_headers([new, old], "msg_1", now, b'{"a":1}')
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert Webhook(secret).verify(b'{"a":1}', headers) == {"a": 1}
    stranger = new_secret(lambda n: b"\x03" * n)
    with pytest.raises(WebhookVerificationError):
        Webhook(stranger).verify(b'{"a":1}', headers)
