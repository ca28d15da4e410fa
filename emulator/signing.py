"""The emulator's id_token signing key: RS256 JWTs, a JWKS and Google's PEM-certificate map.

Google publishes its keys twice: `https://www.googleapis.com/oauth2/v3/certs` (JWKS) and
`.../oauth2/v1/certs` (`{kid: PEM certificate}`). The emulator serves both at the same paths.
google-auth's `id_token.verify_token(..., certs_url=<emulator>/oauth2/v1/certs)` verifies with the
PEM map out of the box; the JWKS form needs PyJWT, which this project does not install.

The RSA key is generated on first use (about 50 ms), not at import or construction, so tests that
never ask for `openid` pay nothing.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JOSE and PKCE use it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_b64url(n: int) -> str:
    return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


class SigningKey:
    """An RSA key with a stable `kid`, created lazily."""

    def __init__(self) -> None:
        self._key: rsa.RSAPrivateKey | None = None
        self._cert_pem: str | None = None

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid if self._key else None!r})"

    @property
    def key(self) -> rsa.RSAPrivateKey:
        if self._key is None:
            self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return self._key

    @property
    def kid(self) -> str:
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return hashlib.sha256(der).hexdigest()[:40]

    def sign_jwt(self, claims: dict[str, Any]) -> str:
        """An RS256 JWT over `claims`, carrying this key's `kid`."""
        header = {"alg": "RS256", "kid": self.kid, "typ": "JWT"}
        signing_input = (
            b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        signature = self.key.sign(
            signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256()
        )
        return signing_input + "." + b64url(signature)

    def jwks(self) -> dict[str, Any]:
        """The public key as Google's `/oauth2/v3/certs` document."""
        numbers = self.key.public_key().public_numbers()
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "alg": "RS256",
                    "use": "sig",
                    "kid": self.kid,
                    "n": _int_b64url(numbers.n),
                    "e": _int_b64url(numbers.e),
                }
            ]
        }

    def pem_certs(self) -> dict[str, str]:
        """The public key as Google's `/oauth2/v1/certs` document: {kid: PEM certificate}."""
        if self._cert_pem is None:
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "emulator.accounts.local")])
            # Certificate validity is not checked by verifiers; keep it wide around real time.
            now = dt.datetime.now(dt.UTC)
            cert = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(name)
                .public_key(self.key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=3650))
                .sign(self.key, hashes.SHA256())
            )
            self._cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
        return {self.kid: self._cert_pem}
