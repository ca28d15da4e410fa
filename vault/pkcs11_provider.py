"""A KEK provider backed by a PKCS#11 token (an HSM; SoftHSM2 in development and CI).

URI (RFC 7512 style; path attributes are `;`-separated and percent-decoded)::

    pkcs11:token=<token label>;object=<KEK name>?module-path=<path to the PKCS#11 .so>
           [&pin-source=env:<VARNAME> | &pin-source=file:<path>]

`type=secret-key` is accepted in the path and ignored. The PIN never appears in the URI: it is
the `pin` argument of `from_uri` (setting GATEWAY_PKCS11_PIN) or comes from `pin-source`.
`pin-value` is refused because a URI ends up in logs and process listings.

Key versions. Version N is an AES-256 secret-key object labelled `<object>-v<N>`, generated
inside the token as a token object with CKA_SENSITIVE=true and CKA_EXTRACTABLE=false, usable only
for encrypt/decrypt: its value never leaves the token. CKA_ID is 16 random bytes so that if two
processes ever create the same version concurrently (first start of two replicas), every process
deterministically wraps under the same one (lowest CKA_ID) and unwrap tries each. The primary is
the highest version that is not retired; `rotate()` generates max+1. The token holds all state,
so a second provider (another process) sees the same versions.

Wrapping is done by the token with CKM_AES_GCM (C_Encrypt / C_Decrypt). SoftHSM 2.6.1 offers both
CKM_AES_GCM and CKM_AES_KEY_WRAP_PAD; GCM is used because it authenticates additional data, which
binds a wrapped DEK to its owner (`aad`) and to its KEK version. `WrappedKey.wrapped` is::

    format (1 byte, 0x01) || iv (12 random bytes) || ciphertext (len(dek) bytes) || tag (16 bytes)

and the GCM additional data is `format (1 byte) || kek_version (4 bytes, big-endian) || aad`.
Random 96-bit IVs are safe well beyond the number of wraps a gateway makes (NIST SP 800-38D
allows 2^32 random-IV encryptions per key), and rotation starts a fresh key anyway.

Retirement destroys the key object in the token (C_DestroyObject): that is the crypto-shred. A
relabelled key would still be in the token and in every token backup, and anyone holding the PIN
could relabel it back. So that `versions()` can still report the version as retired and its
number is never reused, retire first stores a tombstone: a private CKO_DATA object with the same
label and CKA_APPLICATION `calendar-gateway-kek-retired`, holding no key material. A tombstone
wins over a key with the same label (a crash between the two steps leaves the version retired,
and retiring again finishes the destroy).

Threads. python-pkcs11 releases the GIL during PKCS#11 calls and initialises the library with
C_Initialize(NULL), which under the PKCS#11 spec promises the module no concurrent calls (SoftHSM
then does no locking of its own). So every token call runs on this provider's single worker
thread AND holds one process-wide lock shared by all providers: the library is a process-wide
singleton, so its lock is too.
"""

from __future__ import annotations

import asyncio
import os
import re
import struct
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.exceptions import (
    DataLenRange,
    EncryptedDataInvalid,
    EncryptedDataLenRange,
    GeneralError,
    NoSuchToken,
    PinIncorrect,
    PinLenRange,
    PinLocked,
    PKCS11Error,
    UserAlreadyLoggedIn,
)
from pkcs11.mechanisms import GCMParams

from vault.errors import InvalidCiphertext, KekProviderError, RetireRefused
from vault.kek import KekVersion, WrappedKey

FORMAT_GCM = 0x01
IV_BYTES = 12
TAG_BYTES = 16
KEY_BITS = 256
TOMBSTONE_APPLICATION = "calendar-gateway-kek-retired"

# Decrypt failures that mean "these bytes do not open under this key". SoftHSM reports a GCM
# tag mismatch as CKR_GENERAL_ERROR, so on decrypt (and only there) that code means bad input.
_BAD_CIPHERTEXT_ERRORS: tuple[type[PKCS11Error], ...] = (
    GeneralError,
    EncryptedDataInvalid,
    EncryptedDataLenRange,
    DataLenRange,
)

# See the module docstring: one lock for every call into any PKCS#11 module in this process.
_TOKEN_LOCK = threading.Lock()

T = TypeVar("T")


@dataclass(frozen=True)
class Pkcs11Uri:
    """The parsed, non-secret parts of a `pkcs11:` KEK URI."""

    token: str
    object: str
    module_path: str
    pin_source: str | None = None

    @classmethod
    def parse(cls, uri: str) -> Pkcs11Uri:
        """Parse `uri`; raise KekProviderError naming what is wrong (never echoing a PIN)."""
        parts = urlsplit(uri)
        if parts.scheme != "pkcs11":
            raise KekProviderError("PKCS#11 KEK URI must start with 'pkcs11:'")
        path: dict[str, str] = {}
        for item in filter(None, parts.path.split(";")):
            name, sep, value = item.partition("=")
            if not sep:
                raise KekProviderError(f"PKCS#11 URI path attribute {name!r} has no value")
            path[name] = unquote(value)
        query = parse_qs(parts.query, keep_blank_values=True)
        if "pin-value" in query:
            raise KekProviderError(
                "PKCS#11 URI must not carry pin-value: pass the PIN as GATEWAY_PKCS11_PIN "
                "or use pin-source=env:VARNAME"
            )
        unknown = (set(path) - {"token", "object", "type"}) | (
            set(query) - {"module-path", "pin-source"}
        )
        if unknown:
            raise KekProviderError(f"PKCS#11 URI has unsupported attributes: {sorted(unknown)}")
        if path.get("type", "secret-key") != "secret-key":
            raise KekProviderError("PKCS#11 URI type must be secret-key")
        token, obj = path.get("token"), path.get("object")
        module_path = query.get("module-path", [""])[-1]
        if not token or not obj or not module_path:
            raise KekProviderError("PKCS#11 URI needs token=, object= and ?module-path=")
        pin_source = query.get("pin-source", [None])[-1] or None
        return cls(token=token, object=obj, module_path=module_path, pin_source=pin_source)

    def read_pin(self) -> str | None:
        """The PIN named by `pin-source` (`env:NAME` or `file:PATH`), or None if there is none."""
        if self.pin_source is None:
            return None
        kind, _, where = self.pin_source.partition(":")
        if kind == "env":
            value = os.environ.get(where)
            if not value:
                raise KekProviderError(f"pin-source: environment variable {where} is not set")
            return value
        if kind == "file":
            try:
                return Path(where).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise KekProviderError(f"pin-source: cannot read {where}: {exc.strerror}") from None
        raise KekProviderError("pin-source must be env:VARNAME or file:PATH")


@dataclass(frozen=True)
class _Version:
    """A version as found in the token: its keys (normally one) and whether it is retired."""

    number: int
    keys: tuple[Any, ...]  # pkcs11.SecretKey, lowest CKA_ID first
    retired: bool


class Pkcs11Provider:
    """KEK versions held in a PKCS#11 token; the token wraps and unwraps (see module docstring)."""

    def __init__(
        self,
        uri: Pkcs11Uri,
        session: Any,
        executor: ThreadPoolExecutor,
        *,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        """Use `from_uri`; this takes an already logged-in session owned by `executor`'s thread."""
        self._uri = uri
        self._session = session
        self._executor = executor
        self._rng = rng
        self._label_re = re.compile(rf"{re.escape(uri.object)}-v([1-9][0-9]*)")
        self._closed = False

    @classmethod
    async def from_uri(
        cls, uri: str, *, pin: str | None = None, rng: Callable[[int], bytes] = os.urandom
    ) -> Pkcs11Provider:
        """Open a logged-in session on the token named by `uri`; create version 1 if none exists.

        The PIN is `pin` or, if that is empty, the one `pin-source` names; giving both is an error.
        """
        parsed = Pkcs11Uri.parse(uri)
        source_pin = await asyncio.to_thread(parsed.read_pin)  # may read a file
        if pin and source_pin:
            raise KekProviderError("give the PKCS#11 PIN once: GATEWAY_PKCS11_PIN or pin-source")
        user_pin = pin or source_pin
        if not user_pin:
            raise KekProviderError("no PKCS#11 PIN: set GATEWAY_PKCS11_PIN or pin-source")
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pkcs11-kek")
        loop = asyncio.get_running_loop()
        try:
            session = await loop.run_in_executor(executor, _open_session, parsed, user_pin)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        provider = cls(parsed, session, executor, rng=rng)
        try:
            await provider._call(provider._ensure_version_sync)
        except BaseException:
            await provider.close()
            raise
        return provider

    def __repr__(self) -> str:
        return f"Pkcs11Provider(kek_id={self.kek_id!r}, module={self._uri.module_path!r})"

    @property
    def kek_id(self) -> str:
        """`pkcs11:token=<token>;object=<object>`: names the KEK, not a version."""
        return f"pkcs11:token={self._uri.token};object={self._uri.object}"

    async def primary_version(self) -> int:
        """The highest non-retired version."""
        return (await self._call(self._primary_sync)).number

    async def versions(self) -> list[KekVersion]:
        """Every version in the token (including tombstoned ones), oldest first."""
        found = await self._call(self._versions_sync)
        primary = max((v.number for v in found.values() if not v.retired and v.keys), default=0)
        return [
            KekVersion(
                version=v.number,
                state="retired" if v.retired else "primary" if v.number == primary else "active",
            )
            for v in sorted(found.values(), key=lambda v: v.number)
        ]

    async def wrap(self, dek: bytes, aad: bytes) -> WrappedKey:
        """Encrypt `dek` in the token under the primary version with AES-GCM bound to `aad`."""
        if not dek:
            raise ValueError("refusing to wrap an empty data key")
        return await self._call(self._wrap_sync, bytes(dek), bytes(aad))

    async def unwrap(self, wrapped: WrappedKey, aad: bytes) -> bytes:
        """Decrypt in the token; InvalidCiphertext for any bad, foreign or retired input."""
        if wrapped.kek_id != self.kek_id:
            raise InvalidCiphertext("kek_mismatch")
        blob = wrapped.wrapped
        if len(blob) < 1 + IV_BYTES + TAG_BYTES + 1 or blob[0] != FORMAT_GCM:
            raise InvalidCiphertext("malformed")
        return await self._call(self._unwrap_sync, wrapped.kek_version, bytes(blob), bytes(aad))

    async def rotate(self) -> int:
        """Generate version max+1 in the token; it becomes primary."""
        return await self._call(self._rotate_sync)

    async def retire(self, version: int) -> None:
        """Tombstone `version` and destroy its key objects; the primary is refused."""
        await self._call(self._retire_sync, version)

    async def close(self) -> None:
        """Close the session (logging out if it was the last) and stop the worker thread."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, _locked, self._session.close)
        except PKCS11Error:
            pass  # the token went away: nothing left to release
        finally:
            self._executor.shutdown(wait=False)

    # -- running on the worker thread ----------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` on the worker thread, translating PKCS#11 errors to KekProviderError."""
        if self._closed:
            raise KekProviderError("PKCS#11 provider is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, _locked, fn, *args)
        except PKCS11Error as exc:
            # pkcs11 exceptions carry only the CKR_ code name; never our inputs.
            raise KekProviderError(f"PKCS#11 token error: {type(exc).__name__}") from exc

    def _versions_sync(self) -> dict[int, _Version]:
        keys: dict[int, list[Any]] = {}
        for key in self._session.get_objects(
            {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES}
        ):
            match = self._label_re.fullmatch(key.label or "")
            if match:
                keys.setdefault(int(match.group(1)), []).append(key)
        retired: set[int] = set()
        for obj in self._session.get_objects(
            {Attribute.CLASS: ObjectClass.DATA, Attribute.APPLICATION: TOMBSTONE_APPLICATION}
        ):
            match = self._label_re.fullmatch(obj[Attribute.LABEL] or "")
            if match:
                retired.add(int(match.group(1)))
        return {
            n: _Version(
                number=n,
                keys=tuple(sorted(keys.get(n, []), key=lambda k: bytes(k[Attribute.ID]))),
                retired=n in retired,
            )
            for n in keys.keys() | retired
        }

    def _primary_sync(self) -> _Version:
        live = [v for v in self._versions_sync().values() if not v.retired and v.keys]
        if not live:
            raise KekProviderError(f"token has no usable KEK {self._uri.object!r}")
        return max(live, key=lambda v: v.number)

    def _ensure_version_sync(self) -> None:
        if not self._versions_sync():
            self._generate_sync(1)

    def _generate_sync(self, number: int) -> None:
        self._session.generate_key(
            KeyType.AES,
            KEY_BITS,
            id=self._rng(16),
            label=f"{self._uri.object}-v{number}",
            store=True,
            # Encrypt/decrypt only: no C_WrapKey/C_Sign/C_Derive with the KEK.
            capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
            template={
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.PRIVATE: True,
                Attribute.MODIFIABLE: False,
            },
        )

    def _rotate_sync(self) -> int:
        number = max(self._versions_sync(), default=0) + 1
        self._generate_sync(number)
        return number

    def _retire_sync(self, version: int) -> None:
        found = self._versions_sync()
        if version not in found:
            raise KekProviderError(f"KEK version {version} does not exist")
        if not found[version].retired and version == self._primary_sync().number:
            raise RetireRefused(f"KEK version {version} is the primary; rotate first")
        if not found[version].retired:
            self._session.create_object(
                {
                    Attribute.CLASS: ObjectClass.DATA,
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: True,
                    Attribute.LABEL: f"{self._uri.object}-v{version}",
                    Attribute.APPLICATION: TOMBSTONE_APPLICATION,
                    Attribute.VALUE: b"",
                }
            )
        for key in found[version].keys:
            key.destroy()

    def _wrap_sync(self, dek: bytes, aad: bytes) -> WrappedKey:
        primary = self._primary_sync()
        iv = self._rng(IV_BYTES)
        sealed = primary.keys[0].encrypt(
            dek,
            mechanism=Mechanism.AES_GCM,
            mechanism_param=GCMParams(iv, _gcm_aad(primary.number, aad), TAG_BYTES * 8),
        )
        return WrappedKey(
            kek_id=self.kek_id,
            kek_version=primary.number,
            wrapped=bytes([FORMAT_GCM]) + iv + bytes(sealed),
        )

    def _unwrap_sync(self, version: int, blob: bytes, aad: bytes) -> bytes:
        found = self._versions_sync().get(version)
        if found is None or found.retired or not found.keys:
            raise InvalidCiphertext("unknown_or_retired_version")
        iv, sealed = blob[1 : 1 + IV_BYTES], blob[1 + IV_BYTES :]
        params = GCMParams(iv, _gcm_aad(version, aad), TAG_BYTES * 8)
        for key in found.keys:
            try:
                return bytes(
                    key.decrypt(sealed, mechanism=Mechanism.AES_GCM, mechanism_param=params)
                )
            except _BAD_CIPHERTEXT_ERRORS:
                continue  # another key with this label may be the one (see module docstring)
        raise InvalidCiphertext("authentication_failed")


def _gcm_aad(version: int, aad: bytes) -> bytes:
    return struct.pack(">BI", FORMAT_GCM, version) + aad


def _locked(fn: Callable[..., T], *args: Any) -> T:
    with _TOKEN_LOCK:
        return fn(*args)


def _open_session(uri: Pkcs11Uri, pin: str) -> Any:
    """Load the module, find the token and log in. Runs on the provider's worker thread."""
    with _TOKEN_LOCK:
        try:
            lib = pkcs11.lib(uri.module_path)
        except (PKCS11Error, RuntimeError, OSError) as exc:
            # python-pkcs11 raises a bare error with the dlopen message for an unloadable module.
            raise KekProviderError(
                f"cannot load PKCS#11 module {uri.module_path}: {type(exc).__name__}"
            ) from None
        try:
            token = lib.get_token(token_label=uri.token)
        except NoSuchToken:
            raise KekProviderError(f"no PKCS#11 token labelled {uri.token!r}") from None
        except PKCS11Error as exc:
            raise KekProviderError(f"PKCS#11 token lookup failed: {type(exc).__name__}") from None
        try:
            return token.open(rw=True, user_pin=pin)
        except UserAlreadyLoggedIn:
            # Login state is per process, not per session: another provider in this process is
            # logged in, so a plain session is already authorised. (python-pkcs11 does not close
            # the session whose C_Login failed; it lives until C_Finalize. One handle per extra
            # provider instance, which in production means none.) The token cannot check this
            # second PIN: while the process is logged in, C_Login answers "already logged in"
            # whatever the PIN. That grants nothing the process did not already have.
            return token.open(rw=True)
        except (PinIncorrect, PinLenRange, PinLocked) as exc:
            raise KekProviderError(
                f"PKCS#11 token {uri.token!r} rejected the PIN ({type(exc).__name__})"
            ) from None
        except PKCS11Error as exc:
            raise KekProviderError(f"PKCS#11 login failed: {type(exc).__name__}") from None
