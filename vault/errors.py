"""The vault's error tree. Nothing here ever carries key material, plaintext or ciphertext.

VaultError
├── InvalidCiphertext   the ONE error for every failure to open a blob or unwrap a DEK:
│                       flipped byte, truncated blob, wrong context, unknown/retired KEK,
│                       destroyed DEK. `reason` is a short non-secret code for logs.
├── KeyringError        the local keyring file is missing, corrupt or has unsafe permissions
├── TrustKeyError       the trust keys file (receipt signing, journal MAC) cannot be used
├── KekProviderError    the KEK provider (HSM, KMS) cannot be reached or refused an operation
├── KeyNotFound         no data key exists for that integration (never created, or destroyed)
└── RetireRefused       a KEK version cannot be retired (it is the primary, or DEKs still
                        depend on it)
"""

from __future__ import annotations


class VaultError(Exception):
    """Base of every vault error."""


class InvalidCiphertext(VaultError):
    """A blob or wrapped key could not be opened. Deliberately says little."""

    def __init__(self, reason: str = "invalid") -> None:
        super().__init__("ciphertext could not be opened")
        self.reason = reason


class KeyringError(VaultError):
    """The local keyring file cannot be used; the message names the file and the problem."""


class TrustKeyError(VaultError):
    """The trust keys file cannot be used; the message names the file and the problem."""


class KekProviderError(VaultError):
    """The KEK provider failed or is unreachable."""


class KeyNotFound(VaultError):
    """No data key for the given integration."""


class RetireRefused(VaultError):
    """A KEK version may not be retired yet; the message says why (and how many DEKs)."""
