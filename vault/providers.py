"""Choosing a KEK provider from GATEWAY_KEK_URI.

    file:PATH        the local keyring file (created with mode 0600 if missing)
    pkcs11:...       a PKCS#11 HSM (vault.pkcs11_provider), PIN passed separately
    aws-kms:...      AWS KMS (vault.awskms)

The HSM and KMS modules are imported only when chosen, so their libraries are needed only by
deployments that use them.
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import unquote, urlsplit

from vault.errors import KekProviderError
from vault.kek import KekProvider


def _provider_class(module: str, name: str) -> Any:
    # Imported by name, lazily: those modules pull in python-pkcs11 / boto3, and a deployment
    # using the local keyring should not need them installed.
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise KekProviderError(
            f"KEK provider {module}.{name} cannot be loaded: {exc.name or module} is missing"
        ) from None


def _checked(provider: object) -> KekProvider:
    if not isinstance(provider, KekProvider):
        raise KekProviderError(f"{type(provider).__name__} does not implement KekProvider")
    return provider


def _file_path(rest: str) -> str:
    """PATH of `file:PATH`, also accepting the URL spellings file:///abs and file://localhost/abs."""
    if rest.startswith("//"):
        parts = urlsplit("file:" + rest)
        if parts.netloc not in ("", "localhost"):
            raise KekProviderError("file: KEK URI must name a local file, not a remote host")
        rest = unquote(parts.path)
    if not rest:
        raise KekProviderError("file: KEK URI needs a path, e.g. file:./var/keyring.json")
    return rest


async def provider_from_uri(uri: str, *, pkcs11_pin: str | None = None) -> KekProvider:
    """Open the KEK provider named by `uri`. Raises KekProviderError for an unknown scheme,
    KeyringError for an unusable keyring file."""
    scheme, sep, rest = uri.partition(":")
    scheme = scheme.lower()
    if not sep:
        raise KekProviderError("KEK URI must look like file:PATH, pkcs11:... or aws-kms:...")
    if scheme == "file":
        from vault.keyring import LocalKeyringProvider

        return await LocalKeyringProvider.open(_file_path(rest))
    if scheme == "pkcs11":
        pkcs11_cls = _provider_class("vault.pkcs11_provider", "Pkcs11Provider")
        return _checked(await pkcs11_cls.from_uri(uri, pin=pkcs11_pin))
    if scheme == "aws-kms":
        kms_cls = _provider_class("vault.awskms", "AwsKmsProvider")
        return _checked(await kms_cls.from_uri(uri))
    raise KekProviderError(f"unknown KEK URI scheme {scheme!r}; use file:, pkcs11: or aws-kms:")
