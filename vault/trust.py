"""Trust keys: the receipt-signing keys and the deletion journal's MAC key, held with the key
provider setup but never a KEK themselves.

One file (mode 0600, owner only; by default beside the deletion journal, which by default is
beside the keyring) holds them, every secret WRAPPED by the KEK provider in use (the local
keyring, the HSM or KMS), so the file alone opens nothing::

    {
      "format": "calendar-gateway-trust-keys",
      "format_version": 1,
      "journal_key": {"kek_id": "...", "kek_version": 3, "wrapped": "<base64>"},
      "signing_keys": [
        {"key_id": "rk_<16 hex>", "algorithm": "Ed25519", "created_at": "...",
         "retired_at": "..." | null, "public_key": "<base64url, 32 bytes>",
         "private_key": {"kek_id": ..., "kek_version": ..., "wrapped": ...}}   # absent once retired
      ]
    }

Each secret is 32 random bytes (an Ed25519 private key's seed; the HMAC-SHA256 key of the
journal) wrapped with the AAD `b"cg-vault/trust\\x00" | name`, where name is `journal` or the
signing key's id, so a wrapped secret moved to another entry fails to unwrap.

Exactly one signing key is current (not retired): receipts are signed with it. Rotation adds a
new current key and retires the old one: its private key is deleted from the file, its public
key stays listed so every receipt it signed still verifies. Public keys are readable without
the KEK (`read_public_keys`), so verifying needs the file only.

Why not sign inside the HSM or KMS: that needs Ed25519 keys there (SoftHSM2 has CKM_EDDSA only
from 2.6, built against an OpenSSL with EdDSA; not available to our tests), and each provider
would sign differently; a wrapped key works the same with all three.

Secrets wrapped under a KEK version are rewrapped under the primary by `rewrap()` (the CLI's
`keys rewrap` calls it), so retiring a KEK version never strands them; `open()` does it too.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from vault import envelope, files
from vault.errors import InvalidCiphertext, KeyringError, TrustKeyError
from vault.kek import KekProvider, WrappedKey

FORMAT = "calendar-gateway-trust-keys"
FORMAT_VERSION = 1
ALGORITHM = "Ed25519"
SECRET_LEN = 32
_AAD_PREFIX = b"cg-vault/trust\x00"
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
JOURNAL = "journal"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def b64url(data: bytes) -> str:
    """Unpadded base64url, as in JOSE."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    """Inverse of `b64url`; raises ValueError for anything that is not base64url."""
    if not isinstance(text, str) or _B64URL.fullmatch(text) is None:
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


@dataclass(frozen=True)
class PublicKeyInfo:
    """A receipt-signing key as listed by `GET /v1/receipts/keys` (no secret)."""

    key_id: str
    algorithm: str
    public_key: bytes
    created_at: datetime
    retired_at: datetime | None

    def to_public(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "algorithm": self.algorithm,
            "public_key": b64url(self.public_key),
            "created_at": _ts(self.created_at),
            "retired_at": _ts(self.retired_at) if self.retired_at else None,
        }


def _ts(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class _Wrapped:
    kek_id: str
    kek_version: int
    wrapped: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "kek_id": self.kek_id,
            "kek_version": self.kek_version,
            "wrapped": base64.b64encode(self.wrapped).decode(),
        }


@dataclass(frozen=True)
class _SigningEntry:
    info: PublicKeyInfo
    private: _Wrapped | None  # None once retired


@dataclass(frozen=True)
class _Doc:
    journal_key: _Wrapped
    signing: tuple[_SigningEntry, ...]

    def to_json(self) -> bytes:
        keys = []
        for entry in self.signing:
            item = entry.info.to_public()
            item["created_at"] = entry.info.created_at.isoformat()
            if entry.info.retired_at is not None:
                item["retired_at"] = entry.info.retired_at.isoformat()
            if entry.private is not None:
                item["private_key"] = entry.private.to_json()
            keys.append(item)
        doc = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "journal_key": self.journal_key.to_json(),
            "signing_keys": keys,
        }
        return (json.dumps(doc, indent=2) + "\n").encode()


def _aad(name: str) -> bytes:
    return _AAD_PREFIX + name.encode()


def _parse_wrapped(value: Any, bad: Callable[[str], TrustKeyError], what: str) -> _Wrapped:
    if not isinstance(value, dict):
        raise bad(f"{what} is missing")
    kek_id, version, wrapped = value.get("kek_id"), value.get("kek_version"), value.get("wrapped")
    if not isinstance(kek_id, str) or not isinstance(version, int) or not isinstance(wrapped, str):
        raise bad(f"{what} is malformed")
    try:
        raw = base64.b64decode(wrapped, validate=True)
    except (binascii.Error, ValueError):
        raise bad(f"{what} is not valid base64") from None
    return _Wrapped(kek_id, version, raw)


def _parse(path: Path, raw: bytes) -> _Doc:
    def bad(problem: str) -> TrustKeyError:
        return TrustKeyError(f"trust keys file {path}: {problem}")

    doc = files.parse_document(raw, bad, form=FORMAT, version=FORMAT_VERSION)
    journal_key = _parse_wrapped(doc.get("journal_key"), bad, "journal_key")
    entries = doc.get("signing_keys")
    if not isinstance(entries, list) or not entries:
        raise bad("has no signing keys")
    signing: list[_SigningEntry] = []
    for item in entries:
        if not isinstance(item, dict) or not isinstance(item.get("key_id"), str):
            raise bad("a signing key entry is malformed")
        key_id = item["key_id"]
        try:
            public = b64url_decode(item.get("public_key", ""))
            created = datetime.fromisoformat(str(item.get("created_at")))
            retired_raw = item.get("retired_at")
            retired = datetime.fromisoformat(retired_raw) if retired_raw is not None else None
        except (ValueError, TypeError):
            raise bad(f"signing key {key_id} is malformed") from None
        if len(public) != 32 or item.get("algorithm") != ALGORITHM:
            raise bad(f"signing key {key_id} is not an Ed25519 public key")
        private = None
        if retired is None:
            private = _parse_wrapped(item.get("private_key"), bad, f"signing key {key_id}")
        elif "private_key" in item:
            raise bad(f"retired signing key {key_id} still holds its private key")
        signing.append(
            _SigningEntry(PublicKeyInfo(key_id, ALGORITHM, public, created, retired), private)
        )
    if len({e.info.key_id for e in signing}) != len(signing):
        raise bad("lists the same signing key twice")
    if sum(1 for e in signing if e.private is not None) != 1:
        raise bad("must have exactly one current (not retired) signing key")
    return _Doc(journal_key, tuple(signing))


def _read(path: Path) -> _Doc:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise TrustKeyError(f"trust keys file {path}: does not exist") from None
    except OSError as exc:
        raise TrustKeyError(f"trust keys file {path}: cannot be opened ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as fh:
        try:
            files.check_permissions(
                path, os.fstat(fh.fileno()), lambda p: TrustKeyError(f"trust keys file {path}: {p}")
            )
        except KeyringError as exc:
            raise TrustKeyError(str(exc).replace("keyring file", "trust keys file")) from None
        return _parse(path, fh.read())


def read_public_keys(path: str | os.PathLike[str]) -> list[PublicKeyInfo]:
    """Every signing key's public part, oldest first: needs the file only, no KEK."""
    return [e.info for e in _read(Path(path)).signing]


@dataclass(frozen=True)
class Signer:
    """The current receipt-signing key. Never shows its private key."""

    key_id: str
    _private: Ed25519PrivateKey

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def __repr__(self) -> str:
        return f"Signer(key_id={self.key_id!r})"


def public_key_of(seed: bytes) -> bytes:
    return (
        Ed25519PrivateKey.from_private_bytes(seed)
        .public_key()
        .public_bytes(Encoding.Raw, PublicFormat.Raw)
    )


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when `signature` is `public_key`'s Ed25519 signature of `message`."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


class TrustKeys:
    """The trust keys file, opened with the KEK provider. Create with `await TrustKeys.open()`.

    Holds the journal key and the current signing key unwrapped in memory only.
    """

    def __init__(
        self,
        path: Path,
        provider: KekProvider,
        doc: _Doc,
        journal_key: bytes,
        signer: Signer,
        *,
        rng: envelope.Rng,
        now: Callable[[], datetime],
    ) -> None:
        self._path = path
        self._provider = provider
        self._doc = doc
        self._journal_key = journal_key
        self._signer = signer
        self._rng = rng
        self._now = now
        self._mtime_ns = _mtime_ns(path)

    def __repr__(self) -> str:
        return f"TrustKeys(path={str(self._path)!r}, signing_key={self._signer.key_id!r})"

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        provider: KekProvider,
        *,
        create: bool = True,
        rng: envelope.Rng = os.urandom,
        now: Callable[[], datetime] = _utc_now,
    ) -> TrustKeys:
        """Load the file (creating it, 0600, with fresh keys when missing and `create`), unwrap
        its secrets with `provider`, and rewrap any not under the primary KEK version. Raises
        TrustKeyError naming the file for every problem, InvalidCiphertext when a secret does
        not unwrap (another keyring, a retired KEK version)."""
        file = Path(path)
        if create and not await asyncio.to_thread(os.path.lexists, file):
            doc = _Doc(
                journal_key=await _wrap(provider, JOURNAL, envelope.new_dek(rng)),
                signing=(await _new_signing_entry(provider, rng, now()),),
            )

            def publish() -> None:
                file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                with contextlib.suppress(FileExistsError):  # another process was first
                    files.publish(file, doc.to_json(), overwrite=False)

            await asyncio.to_thread(publish)
        keys = await cls._load(file, provider, rng=rng, now=now)
        await keys.rewrap()
        return keys

    @classmethod
    async def _load(
        cls,
        file: Path,
        provider: KekProvider,
        *,
        rng: envelope.Rng,
        now: Callable[[], datetime],
    ) -> TrustKeys:
        doc = await asyncio.to_thread(_read, file)
        journal_key = await _unwrap(provider, JOURNAL, doc.journal_key)
        signer = await _signer_of(provider, doc)
        return cls(file, provider, doc, journal_key, signer, rng=rng, now=now)

    def _install(self, other: TrustKeys) -> None:
        self._doc, self._journal_key, self._signer = other._doc, other._journal_key, other._signer
        self._mtime_ns = other._mtime_ns

    @property
    def path(self) -> Path:
        return self._path

    @property
    def journal_key(self) -> bytes:
        """The deletion journal's HMAC-SHA256 key."""
        return self._journal_key

    def public_keys(self) -> list[PublicKeyInfo]:
        """Every signing key's public part, oldest first (retired ones included)."""
        return [e.info for e in self._doc.signing]

    async def signer(self) -> Signer:
        """The current signing key, re-reading the file first when another process (the CLI's
        `receipts rotate-key`) changed it."""
        if await asyncio.to_thread(_mtime_ns, self._path) != self._mtime_ns:
            self._install(
                await self._load(self._path, self._provider, rng=self._rng, now=self._now)
            )
        return self._signer

    async def rotate_signing_key(self) -> PublicKeyInfo:
        """Add a new current signing key and retire the old one (its private key is deleted
        from the file; its public key stays listed). Returns the new key."""
        new = await _new_signing_entry(self._provider, self._rng, self._now())

        def update() -> _Doc:
            with files.locked(self._path):
                current = _read(self._path)
                now = self._now()
                kept = tuple(
                    _SigningEntry(replace(e.info, retired_at=now), None)
                    if e.private is not None
                    else e
                    for e in current.signing
                )
                doc = _Doc(current.journal_key, (*kept, new))
                files.publish(self._path, doc.to_json(), overwrite=True)
                return doc

        await asyncio.to_thread(update)
        self._install(await self._load(self._path, self._provider, rng=self._rng, now=self._now))
        return new.info

    async def rewrap(self) -> int:
        """Rewrap every secret not under the provider's primary KEK version; returns how many."""
        primary = await self._provider.primary_version()
        kek_id = self._provider.kek_id

        def stale(w: _Wrapped) -> bool:
            return w.kek_id != kek_id or w.kek_version != primary

        doc = self._doc
        if not stale(doc.journal_key) and not any(
            e.private is not None and stale(e.private) for e in doc.signing
        ):
            return 0
        journal = await _wrap(self._provider, JOURNAL, self._journal_key)
        signing = []
        for entry in doc.signing:
            if entry.private is None:
                signing.append(entry)
                continue
            seed = await _unwrap(self._provider, entry.info.key_id, entry.private)
            signing.append(
                _SigningEntry(entry.info, await _wrap(self._provider, entry.info.key_id, seed))
            )
        rewrapped = _Doc(journal, tuple(signing))

        def update() -> None:
            with files.locked(self._path):
                on_disk = _read(self._path)
                # Another process rotated meanwhile: keep its signing keys, rewrap next time.
                if [e.info.key_id for e in on_disk.signing] != [
                    e.info.key_id for e in rewrapped.signing
                ]:
                    return
                files.publish(self._path, rewrapped.to_json(), overwrite=True)

        await asyncio.to_thread(update)
        self._install(await self._load(self._path, self._provider, rng=self._rng, now=self._now))
        return 1 + sum(1 for e in signing if e.private is not None)


def _mtime_ns(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1


async def _wrap(provider: KekProvider, name: str, secret: bytes) -> _Wrapped:
    wrapped = await provider.wrap(secret, _aad(name))
    return _Wrapped(wrapped.kek_id, wrapped.kek_version, wrapped.wrapped)


async def _unwrap(provider: KekProvider, name: str, wrapped: _Wrapped) -> bytes:
    secret = await provider.unwrap(
        WrappedKey(wrapped.kek_id, wrapped.kek_version, wrapped.wrapped), _aad(name)
    )
    if len(secret) != SECRET_LEN:
        raise InvalidCiphertext("trust_key_length")
    return secret


async def _new_signing_entry(
    provider: KekProvider, rng: envelope.Rng, created_at: datetime
) -> _SigningEntry:
    seed = envelope.new_dek(rng)  # 32 random bytes: an Ed25519 private key
    key_id = "rk_" + rng(8).hex()
    info = PublicKeyInfo(key_id, ALGORITHM, public_key_of(seed), created_at, None)
    return _SigningEntry(info, await _wrap(provider, key_id, seed))


async def _signer_of(provider: KekProvider, doc: _Doc) -> Signer:
    current = next(e for e in doc.signing if e.private is not None)
    assert current.private is not None
    seed = await _unwrap(provider, current.info.key_id, current.private)
    return Signer(current.info.key_id, Ed25519PrivateKey.from_private_bytes(seed))
