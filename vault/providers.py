"""Choosing a KEK provider from GATEWAY_KEK_URI.

    file:PATH        the local keyring file (created with mode 0600 if missing);
                     file:///abs/path and file://localhost/abs/path are accepted too
    pkcs11:...       a PKCS#11 HSM (vault.pkcs11_provider), PIN passed separately
    aws-kms:...      AWS KMS (vault.awskms)

The HSM and KMS modules are imported only when chosen, so their libraries (python-pkcs11,
boto3) are needed only by deployments that use them.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from vault.errors import KekProviderError
from vault.kek import KekProvider


def _unloadable(scheme: str, exc: ImportError) -> KekProviderError:
    return KekProviderError(
        f"the {scheme}: KEK provider cannot be loaded: {exc.name or 'a module'} is missing"
    )


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


def keyring_path(uri: str) -> str | None:
    """The keyring file of a `file:` KEK URI; None for other providers (or a bad URI)."""
    scheme, sep, rest = uri.partition(":")
    if not sep or scheme.lower() != "file":
        return None
    try:
        return _file_path(rest)
    except KekProviderError:
        return None


async def provider_from_uri(uri: str, *, pkcs11_pin: str | None = None) -> KekProvider:
    """Open the KEK provider named by `uri`.

    Raises KekProviderError for an unknown scheme or a provider whose libraries are missing,
    KeyringError for an unusable keyring file. The PIN never appears in an error.
    """
    scheme, sep, rest = uri.partition(":")
    scheme = scheme.lower()
    if not sep:
        raise KekProviderError("KEK URI must look like file:PATH, pkcs11:... or aws-kms:...")
    if scheme == "file":
        from vault.keyring import LocalKeyringProvider

        return await LocalKeyringProvider.open(_file_path(rest))
    if scheme == "pkcs11":
        try:
            from vault.pkcs11_provider import Pkcs11Provider
        except ImportError as exc:
            raise _unloadable(scheme, exc) from None
        return _checked(await Pkcs11Provider.from_uri(uri, pin=pkcs11_pin))
    if scheme == "aws-kms":
        try:
            from vault.awskms import AwsKmsProvider
        except ImportError as exc:
            raise _unloadable(scheme, exc) from None
        return _checked(await AwsKmsProvider.from_uri(uri))
    raise KekProviderError(f"unknown KEK URI scheme {scheme!r}; use file:, pkcs11: or aws-kms:")
