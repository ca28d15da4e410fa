"""The provider tests' constants and helpers: the SoftHSM2 token, KMS names and URIs, and the
factory type (the fixtures are in conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from vault.kek import KekProvider

SO_PIN = "so-pin-4321"


USER_PIN = "user-pin-8765"


TOKEN_LABEL = "cg-test"


KMS_REGION = "eu-west-1"


# A dead endpoint refuses the connection at once; the read timeout only has to outlast a slow
# answer from moto on a loaded machine (the hung-endpoint tests set their own).
KMS_TEST_QUERY = "connect-timeout=5&read-timeout=30&max-attempts=2"


@dataclass(frozen=True)
class SoftHsmToken:
    """A freshly initialised SoftHSM2 token (test PINs, not secrets)."""

    module_path: str
    label: str
    pin: str

    def uri(self, kek_name: str, **query: str) -> str:
        extra = "".join(f"&{k}={v}" for k, v in query.items())
        return f"pkcs11:token={self.label};object={kek_name}?module-path={self.module_path}{extra}"


def unique_name(prefix: str = "cg-kek") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def kms_uri(endpoint: str, alias_name: str, query: str = KMS_TEST_QUERY) -> str:
    return f"aws-kms://alias/{alias_name}?region={KMS_REGION}&endpoint={endpoint}&{query}"


ProviderFactory = Callable[[], Awaitable[KekProvider]]
