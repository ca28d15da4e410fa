"""The local keyring: KEK versions kept in a JSON file, the default KEK provider.

File format (mode 0600, owner only)::

    {
      "format": "calendar-gateway-keyring",
      "format_version": 1,
      "keyring_id": "<32 hex chars, random, names this keyring in kek_id>",
      "versions": [
        {"version": 1, "state": "retired", "created_at": "2026-01-01T00:00:00+00:00"},
        {"version": 2, "state": "active",  "created_at": "...", "key": "<base64 of 32 bytes>"},
        {"version": 3, "state": "primary", "created_at": "...", "key": "<base64 of 32 bytes>"}
      ]
    }

Exactly one version is primary (new wraps use it); active versions still unwrap; retired
versions have had their key bytes deleted from the file, so nothing can unwrap under them.
The wrapped-DEK byte layout is documented in `vault.envelope` (layout 4).

The file is read once by `LocalKeyringProvider.open()`; rotate and retire re-read it under an
exclusive `flock` on `<file>.lock`, so two CLI processes racing cannot both create version N,
and write it back atomically (temp file, fsync, rename, fsync of the directory). A running
gateway sees versions created by another process when it meets one it does not know
(`unwrap` reloads the file, at most once per `reload_interval_s`), or on `reload()`.
Retiring in another process only takes effect here after a reload or restart: retire with
the gateway stopped, or reload it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault import envelope, files
from vault.errors import InvalidCiphertext, KekProviderError, KeyringError, RetireRefused
from vault.kek import KekState, KekVersion, WrappedKey

log = logging.getLogger(__name__)

FORMAT = "calendar-gateway-keyring"
FORMAT_VERSION = 1
_STATES: tuple[KekState, ...] = ("primary", "active", "retired")


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _Version:
    version: int
    state: KekState
    created_at: datetime
    key: bytes | None  # None once retired

    def __repr__(self) -> str:
        return f"_Version({self.version}, {self.state})"


@dataclass(frozen=True)
class _Keyring:
    keyring_id: str
    versions: tuple[_Version, ...]

    @property
    def primary(self) -> _Version:
        return next(v for v in self.versions if v.state == "primary")

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "keyring_id": self.keyring_id,
            "versions": [
                {
                    "version": v.version,
                    "state": v.state,
                    "created_at": v.created_at.isoformat(),
                    **({"key": base64.b64encode(v.key).decode()} if v.key is not None else {}),
                }
                for v in self.versions
            ],
        }
        return (json.dumps(doc, indent=2) + "\n").encode()


def _parse(path: Path, raw: bytes) -> _Keyring:
    """Validate the file's content; every problem becomes a KeyringError naming the file."""

    def bad(problem: str) -> KeyringError:
        return KeyringError(f"keyring file {path}: {problem}")

    doc = files.parse_document(raw, bad, form=FORMAT, version=FORMAT_VERSION)
    keyring_id = doc.get("keyring_id")
    if not isinstance(keyring_id, str) or not 1 <= len(keyring_id) <= 64:
        raise bad("keyring_id is missing or invalid")
    entries = doc.get("versions")
    if not isinstance(entries, list) or not entries:
        raise bad("has no key versions")
    versions: list[_Version] = []
    for entry in entries:
        versions.append(_parse_version(entry, bad))
    numbers = [v.version for v in versions]
    if len(set(numbers)) != len(numbers):
        raise bad("lists the same version twice")
    primaries = [v for v in versions if v.state == "primary"]
    if len(primaries) != 1:
        raise bad(f"must have exactly one primary version, found {len(primaries)}")
    versions.sort(key=lambda v: v.version)
    return _Keyring(keyring_id=keyring_id, versions=tuple(versions))


def _parse_version(entry: Any, bad: Callable[[str], KeyringError]) -> _Version:
    if not isinstance(entry, dict):
        raise bad("a version entry is not an object")
    number = entry.get("version")
    if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number < 2**31:
        raise bad("a version number is missing or invalid")
    state = entry.get("state")
    if state not in _STATES:
        raise bad(f"version {number} has an invalid state")
    try:
        created_at = datetime.fromisoformat(str(entry.get("created_at")))
    except ValueError:
        raise bad(f"version {number} has an invalid created_at") from None
    encoded = entry.get("key")
    key: bytes | None = None
    if state == "retired":
        if encoded is not None:
            raise bad(f"retired version {number} still holds key material")
    else:
        if not isinstance(encoded, str):
            raise bad(f"version {number} has no key")
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise bad(f"version {number} key is not valid base64") from None
        if len(key) != envelope.KEK_LEN:
            raise bad(f"version {number} key must be {envelope.KEK_LEN} bytes")
    return _Version(version=number, state=state, created_at=created_at, key=key)


def _check_permissions(path: Path, st: os.stat_result) -> None:
    files.check_permissions(
        path, st, lambda problem: KeyringError(f"keyring file {path}: {problem}")
    )


def _read(path: Path) -> _Keyring:
    try:
        # O_NOFOLLOW: a symlink planted in place of the keyring is refused, not followed.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise KeyringError(f"keyring file {path}: does not exist") from None
    except OSError as exc:
        raise KeyringError(f"keyring file {path}: cannot be opened ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as fh:
        _check_permissions(path, os.fstat(fh.fileno()))
        return _parse(path, fh.read())


class LocalKeyringProvider:
    """KekProvider over a local keyring file. Create it with `await LocalKeyringProvider.open()`.

    wrap/unwrap are in-memory AES-GCM and run inline; file reads and writes run in a thread.
    """

    def __init__(
        self,
        path: Path,
        keyring: _Keyring,
        *,
        rng: envelope.Rng = os.urandom,
        now: Callable[[], datetime] = _utc_now,
        clock: Callable[[], float] = time.monotonic,
        reload_interval_s: float = 5.0,
    ) -> None:
        self._path = path
        self._rng = rng
        self._now = now
        self._clock = clock
        self._reload_interval_s = reload_interval_s
        self._last_reload = clock()
        self._install(keyring)

    def _install(self, keyring: _Keyring) -> None:
        self._keyring = keyring
        # AESGCM objects prepared once per version: rewrapping 20k DEKs/s cannot afford key setup.
        self._aeads = {v.version: AESGCM(v.key) for v in keyring.versions if v.key is not None}
        self._primary = keyring.primary.version

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        rng: envelope.Rng = os.urandom,
        now: Callable[[], datetime] = _utc_now,
        clock: Callable[[], float] = time.monotonic,
        reload_interval_s: float = 5.0,
    ) -> LocalKeyringProvider:
        """Load the keyring at `path`, generating it (mode 0600, one primary version) if it
        does not exist and `create` is true. Raises KeyringError on any problem with the file."""
        file = Path(path)

        def load() -> _Keyring:
            if create and not os.path.lexists(file):
                file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                keyring = _Keyring(
                    keyring_id=rng(16).hex(),
                    versions=(_Version(1, "primary", now(), envelope.new_dek(rng)),),
                )
                with contextlib.suppress(FileExistsError):  # another process created it first
                    files.publish(file, keyring.to_json(), overwrite=False)
            return _read(file)

        keyring = await asyncio.to_thread(load)
        return cls(
            file, keyring, rng=rng, now=now, clock=clock, reload_interval_s=reload_interval_s
        )

    @property
    def path(self) -> Path:
        """The keyring file."""
        return self._path

    @property
    def kek_id(self) -> str:
        """`local:<keyring_id>`: survives renaming or moving the file."""
        return f"local:{self._keyring.keyring_id}"

    async def primary_version(self) -> int:
        """The version new wraps use."""
        return self._primary

    async def versions(self) -> list[KekVersion]:
        """Every version in the file, oldest first (no key material)."""
        return [KekVersion(v.version, v.state, v.created_at) for v in self._keyring.versions]

    async def wrap(self, dek: bytes, aad: bytes) -> WrappedKey:
        """Wrap `dek` under the primary version, bound to `aad`.

        The file is re-read first when our copy is older than `reload_interval_s`, so a
        rotation or retirement by another process (the CLI) reaches new wraps within that
        time; `Vault.retire` waits longer than that before retiring a superseded version.
        """
        if self._clock() - self._last_reload >= self._reload_interval_s:
            try:
                await self.reload()
            except KeyringError as exc:
                # Keep serving with the keys we hold; the broken file is reported loudly.
                log.warning("keeping the loaded keyring: %s", exc)
        version = self._primary
        aead = self._aeads.get(version)
        if aead is None:
            raise KekProviderError(f"local keyring {self._path} is closed")
        wrapped = envelope.wrap_dek(aead, version, dek, aad, self._rng)
        return WrappedKey(kek_id=self.kek_id, kek_version=version, wrapped=wrapped)

    async def unwrap(self, wrapped: WrappedKey, aad: bytes) -> bytes:
        """Return the DEK, or raise InvalidCiphertext (tampered, wrong aad, unknown/retired)."""
        if wrapped.kek_id != self.kek_id:
            raise InvalidCiphertext("other_kek")
        aead = self._aeads.get(wrapped.kek_version)
        if aead is None and self._may_reload(wrapped.kek_version):
            # Perhaps another process (the CLI) rotated since we loaded the file.
            await self.reload()
            aead = self._aeads.get(wrapped.kek_version)
        if aead is None:
            raise InvalidCiphertext("unknown_kek_version")
        return envelope.unwrap_dek(aead, wrapped.kek_version, wrapped.wrapped, aad)

    def _may_reload(self, version: int) -> bool:
        known = {v.version for v in self._keyring.versions}
        # Only versions newer than any we know can appear later; rate-limited so a corrupt row
        # cannot make every request re-read the file.
        if version <= max(known):
            return False
        return self._clock() - self._last_reload >= self._reload_interval_s

    async def reload(self) -> None:
        """Re-read the keyring file (picks up rotations and retirements by other processes)."""
        self._last_reload = self._clock()
        self._install(await asyncio.to_thread(_read, self._path))

    async def rotate(self) -> int:
        """Add version max+1 as primary (the old primary stays active) and return it."""

        def update() -> _Keyring:
            with files.locked(self._path):
                current = _read(self._path)  # another process may have rotated meanwhile
                number = max(v.version for v in current.versions) + 1
                demoted = tuple(
                    _Version(v.version, "active", v.created_at, v.key)
                    if v.state == "primary"
                    else v
                    for v in current.versions
                )
                new = _Version(number, "primary", self._now(), envelope.new_dek(self._rng))
                keyring = _Keyring(current.keyring_id, (*demoted, new))
                files.publish(self._path, keyring.to_json(), overwrite=True)
                return keyring

        keyring = await asyncio.to_thread(update)
        self._install(keyring)
        return keyring.primary.version

    async def retire(self, version: int) -> None:
        """Retire `version`: its key bytes are deleted from the file. Refuses the primary.

        Retiring an already retired version does nothing. The vault checks first that no DEK
        is still wrapped under `version`.
        """

        def update() -> _Keyring:
            with files.locked(self._path):
                current = _read(self._path)
                target = next((v for v in current.versions if v.version == version), None)
                if target is None:
                    raise RetireRefused(f"KEK version {version} does not exist")
                if target.state == "primary":
                    raise RetireRefused(
                        f"KEK version {version} is the primary; rotate to a new version first"
                    )
                if target.state == "retired":
                    return current
                versions = tuple(
                    _Version(v.version, "retired", v.created_at, None) if v is target else v
                    for v in current.versions
                )
                keyring = _Keyring(current.keyring_id, versions)
                files.publish(self._path, keyring.to_json(), overwrite=True)
                return keyring

        self._install(await asyncio.to_thread(update))

    async def close(self) -> None:
        """Forget the key material held in memory."""
        self._aeads = {}

    def __repr__(self) -> str:
        states = ", ".join(f"{v.version}:{v.state}" for v in self._keyring.versions)
        return f"LocalKeyringProvider(path={str(self._path)!r}, versions=[{states}])"
