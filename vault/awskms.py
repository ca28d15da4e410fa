"""A KEK provider backed by AWS KMS.

URI::

    aws-kms://alias/<name>[?region=<aws region>][&endpoint=<http(s) URL>]
                         [&connect-timeout=<s>][&read-timeout=<s>][&max-attempts=<n>]

(`aws-kms:alias/<name>?...` is accepted as a synonym.)

`region` defaults to the normal AWS chain (AWS_REGION, the config file); `endpoint` is for local
stand-ins such as moto or LocalStack. Credentials always come from the normal AWS chain
(environment, web identity, instance role), never from the URI. Timeouts default to 5 s connect,
10 s read and 3 attempts in total, so an unreachable KMS fails a request in seconds instead of
hanging a vault call.

Key versions. Version N is the KMS key that the alias `alias/<name>-v<N>` points at; KMS holds
all state, so the provider is stateless and every instance sees the same versions. The primary
is the highest version whose key is Enabled; a Disabled or PendingDeletion key is "retired".
`rotate()` creates a new SYMMETRIC_DEFAULT key and the alias `-v<max+1>`. If no version alias
exists when a provider is opened (`from_uri`), it creates version 1. If two processes create the
same version at once, CreateAlias lets exactly one win; the loser schedules its unused key for
deletion and adopts the winner.

Wrapping is KMS Encrypt; `WrappedKey.wrapped` is the KMS CiphertextBlob unchanged. The request
carries the encryption context ``{"kek-version": "<N>", "aad": "b64:<base64(aad)>"}``, which KMS
authenticates, so a wrapped DEK opens only for the same owner (`aad`) and the version it claims.
Note that KMS writes the encryption context to CloudTrail in clear: `aad` must be (and, as the
integration binding, is) an identifier, not a secret. Unwrap is Decrypt with the same context and
KeyId pinned to that version's key, so a blob made under another key is refused
(IncorrectKeyException) rather than silently opened.

Retirement is DisableKey: KMS then refuses Decrypt (DisabledException) and the provider refuses
it locally too. It is reversible on purpose. The irreversible shred is the operator's step once
no backup needs the version: ``aws kms schedule-key-deletion --key-id <key>
--pending-window-in-days 7`` (at least 7 days, cancellable until then).

The version list is cached for `cache_ttl_s` (default 30 s) of the injected `clock`, so a wrap
costs one KMS call; rotate, retire and versions() always re-read it, and a version the cache does
not know, or a primary KMS reports disabled, triggers one re-read.

boto3 is blocking: every call runs in a worker thread (asyncio.to_thread); boto3 clients are
thread-safe, so concurrent calls need no lock. Only version creation is serialised.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar
from urllib.parse import parse_qs, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from vault.errors import InvalidCiphertext, KekProviderError, RetireRefused
from vault.kek import KekVersion, WrappedKey

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient

T = TypeVar("T")

_ALIAS_NAME = re.compile(r"[A-Za-z0-9/_-]{1,200}")
# Decrypt errors that mean "this blob does not open here", as opposed to an outage or a
# permissions problem (AccessDeniedException stays a KekProviderError: it is misconfiguration).
_BAD_CIPHERTEXT_CODES = frozenset(
    {
        "InvalidCiphertextException",
        "IncorrectKeyException",
        "DisabledException",
        "KMSInvalidStateException",
        "NotFoundException",
    }
)
# Encrypt errors that mean our cached primary is stale (disabled or deleted elsewhere).
_STALE_PRIMARY_CODES = frozenset(
    {"DisabledException", "KMSInvalidStateException", "NotFoundException"}
)
_RETIRED_STATES = frozenset({"Disabled", "PendingDeletion", "PendingReplicaDeletion"})


@dataclass(frozen=True)
class KmsUri:
    """The parsed `aws-kms://` KEK URI (nothing in it is secret)."""

    alias: str  # "alias/<name>": versions are "alias/<name>-v<N>"
    region: str | None = None
    endpoint: str | None = None
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 10.0
    max_attempts: int = 3

    @classmethod
    def parse(cls, uri: str) -> KmsUri:
        """Parse `uri`; raise KekProviderError saying what is wrong."""
        parts = urlsplit(uri)
        # aws-kms://alias/<name> is the documented form; aws-kms:alias/<name> is accepted too.
        if parts.netloc == "alias":
            name = parts.path.lstrip("/")
        elif not parts.netloc and parts.path.startswith("alias/"):
            name = parts.path.removeprefix("alias/")
        else:
            name = ""
        if parts.scheme != "aws-kms" or not name:
            raise KekProviderError("AWS KMS KEK URI must look like aws-kms://alias/<name>")
        if not _ALIAS_NAME.fullmatch(name) or name.startswith("aws/"):
            raise KekProviderError(
                "KMS alias name must be letters, digits, '/', '_' or '-' and not start with aws/"
            )
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        known = {"region", "endpoint", "connect-timeout", "read-timeout", "max-attempts"}
        unknown = set(query) - known
        if unknown:
            # Also catches anyone trying to put credentials in the URI.
            raise KekProviderError(f"AWS KMS URI has unsupported parameters: {sorted(unknown)}")
        endpoint = query.get("endpoint") or None
        if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
            raise KekProviderError("AWS KMS endpoint must be an http:// or https:// URL")
        try:
            return cls(
                alias=f"alias/{name}",
                region=query.get("region") or None,
                endpoint=endpoint,
                connect_timeout_s=float(query.get("connect-timeout", cls.connect_timeout_s)),
                read_timeout_s=float(query.get("read-timeout", cls.read_timeout_s)),
                max_attempts=int(query.get("max-attempts", cls.max_attempts)),
            )
        except ValueError:
            raise KekProviderError(
                "AWS KMS URI timeouts must be numbers and max-attempts an integer"
            ) from None


@dataclass(frozen=True)
class _KmsVersion:
    number: int
    key_id: str
    retired: bool
    created_at: datetime | None


class AwsKmsProvider:
    """KEK versions as KMS keys behind numbered aliases (see the module docstring)."""

    def __init__(
        self,
        uri: KmsUri,
        client: KMSClient,
        *,
        clock: Callable[[], float] = time.monotonic,
        cache_ttl_s: float = 30.0,
    ) -> None:
        """Use `from_uri`; this takes a ready boto3 KMS client."""
        self._uri = uri
        self._client = client
        self._clock = clock
        self._cache_ttl_s = cache_ttl_s
        self._cache: dict[int, _KmsVersion] = {}
        self._cached_at: float | None = None
        self._create_lock = asyncio.Lock()
        self._version_re = re.compile(rf"{re.escape(uri.alias)}-v([1-9][0-9]*)")

    @classmethod
    async def from_uri(
        cls,
        uri: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        cache_ttl_s: float = 30.0,
    ) -> AwsKmsProvider:
        """Build the client, read the versions from KMS and create version 1 if there is none."""
        parsed = KmsUri.parse(uri)
        client = await _run("create client", _make_client, parsed)
        provider = cls(parsed, client, clock=clock, cache_ttl_s=cache_ttl_s)
        try:
            await provider._ensure_first_version()
        except BaseException:
            await provider.close()
            raise
        return provider

    def __repr__(self) -> str:
        return f"AwsKmsProvider(kek_id={self.kek_id!r}, region={self._client.meta.region_name!r})"

    @property
    def kek_id(self) -> str:
        """`aws-kms:alias/<name>`: names the KEK family, not a version."""
        return f"aws-kms:{self._uri.alias}"

    async def primary_version(self) -> int:
        """The highest version whose KMS key is enabled."""
        return self._primary(await self._versions()).number

    async def versions(self) -> list[KekVersion]:
        """Every version alias with its key state, oldest first (always read from KMS)."""
        found = await self._versions(refresh=True)
        primary = max((v.number for v in found.values() if not v.retired), default=0)
        return [
            KekVersion(
                version=v.number,
                state="retired" if v.retired else "primary" if v.number == primary else "active",
                created_at=v.created_at,
            )
            for v in sorted(found.values(), key=lambda v: v.number)
        ]

    async def wrap(self, dek: bytes, aad: bytes) -> WrappedKey:
        """KMS Encrypt under the primary version with `aad` in the encryption context."""
        if not dek:
            raise ValueError("refusing to wrap an empty data key")
        for refresh in (False, True):
            primary = self._primary(await self._versions(refresh=refresh))
            try:
                response = await asyncio.to_thread(
                    self._client.encrypt,
                    KeyId=primary.key_id,
                    Plaintext=dek,
                    EncryptionContext=_context(primary.number, aad),
                    EncryptionAlgorithm="SYMMETRIC_DEFAULT",
                )
            except ClientError as exc:
                if not refresh and _code(exc) in _STALE_PRIMARY_CODES:
                    continue  # someone retired it elsewhere: re-read the versions once
                _raise_provider_error("Encrypt", exc)
            except BotoCoreError as exc:
                _raise_provider_error("Encrypt", exc)
            return WrappedKey(
                kek_id=self.kek_id, kek_version=primary.number, wrapped=response["CiphertextBlob"]
            )
        raise AssertionError("unreachable")  # pragma: no cover

    async def unwrap(self, wrapped: WrappedKey, aad: bytes) -> bytes:
        """KMS Decrypt pinned to the version's key; InvalidCiphertext for any bad input."""
        if wrapped.kek_id != self.kek_id:
            raise InvalidCiphertext("kek_mismatch")
        if not wrapped.wrapped:
            raise InvalidCiphertext("malformed")
        found = (await self._versions()).get(wrapped.kek_version)
        if found is None:
            found = (await self._versions(refresh=True)).get(wrapped.kek_version)
        if found is None or found.retired:
            raise InvalidCiphertext("unknown_or_retired_version")
        try:
            response = await asyncio.to_thread(
                self._client.decrypt,
                KeyId=found.key_id,
                CiphertextBlob=wrapped.wrapped,
                EncryptionContext=_context(found.number, aad),
                EncryptionAlgorithm="SYMMETRIC_DEFAULT",
            )
        except ClientError as exc:
            if _code(exc) in _BAD_CIPHERTEXT_CODES:
                raise InvalidCiphertext(_code(exc)) from None
            _raise_provider_error("Decrypt", exc)
        except BotoCoreError as exc:
            _raise_provider_error("Decrypt", exc)
        return response["Plaintext"]

    async def rotate(self) -> int:
        """Create a key and alias `-v<max+1>`; it becomes primary."""
        async with self._create_lock:
            number = max(await self._versions(refresh=True), default=0) + 1
            await _run("CreateKey", self._create_version_sync, number)
            await self._versions(refresh=True)
        return number

    async def retire(self, version: int) -> None:
        """DisableKey on `version`'s key; the primary is refused. Idempotent."""
        async with self._create_lock:
            found = await self._versions(refresh=True)
            if version not in found:
                raise KekProviderError(f"KEK version {version} does not exist")
            if found[version].retired:
                return
            if version == self._primary(found).number:
                raise RetireRefused(f"KEK version {version} is the primary; rotate first")
            await _run("DisableKey", lambda: self._client.disable_key(KeyId=found[version].key_id))
            await self._versions(refresh=True)

    async def close(self) -> None:
        """Close the client's HTTP connection pool."""
        await asyncio.to_thread(self._client.close)

    # -- internals -----------------------------------------------------------------------------

    def _primary(self, found: dict[int, _KmsVersion]) -> _KmsVersion:
        live = [v for v in found.values() if not v.retired]
        if not live:
            raise KekProviderError(f"every KMS key behind {self._uri.alias}-v<N> is disabled")
        return max(live, key=lambda v: v.number)

    async def _versions(self, *, refresh: bool = False) -> dict[int, _KmsVersion]:
        """The version map, from the cache while it is fresh, else from KMS."""
        now = self._clock()
        fresh = self._cached_at is not None and now - self._cached_at < self._cache_ttl_s
        if fresh and not refresh:
            return self._cache
        found = await _run("ListAliases", self._list_sync)
        self._cache, self._cached_at = found, now
        return found

    async def _ensure_first_version(self) -> None:
        async with self._create_lock:
            if not await self._versions(refresh=True):
                await _run("CreateKey", self._create_version_sync, 1)
                await self._versions(refresh=True)

    def _list_sync(self) -> dict[int, _KmsVersion]:
        found: dict[int, _KmsVersion] = {}
        for page in self._client.get_paginator("list_aliases").paginate():
            for alias in page.get("Aliases", []):
                match = self._version_re.fullmatch(alias.get("AliasName", ""))
                key_id = alias.get("TargetKeyId")
                if not match or not key_id:
                    continue
                meta = self._client.describe_key(KeyId=key_id)["KeyMetadata"]
                number = int(match.group(1))
                found[number] = _KmsVersion(
                    number=number,
                    key_id=meta.get("KeyId", key_id),
                    retired=meta.get("KeyState") in _RETIRED_STATES,
                    created_at=meta.get("CreationDate"),
                )
        return found

    def _create_version_sync(self, number: int) -> None:
        alias = f"{self._uri.alias}-v{number}"
        key_id = self._client.create_key(
            KeySpec="SYMMETRIC_DEFAULT",
            KeyUsage="ENCRYPT_DECRYPT",
            Description=f"Calendar Gateway KEK {alias} (wraps OAuth token data keys)",
            Tags=[{"TagKey": "calendar-gateway:kek", "TagValue": alias}],
        )["KeyMetadata"]["KeyId"]
        try:
            self._client.create_alias(AliasName=alias, TargetKeyId=key_id)
        except (ClientError, BotoCoreError) as exc:
            # Without its alias the new key is unreachable and has wrapped nothing: shred it.
            # AlreadyExists means another process created this version first; adopt theirs.
            # Best effort: the original error is the one worth reporting.
            with contextlib.suppress(ClientError, BotoCoreError):
                self._client.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
            if not (isinstance(exc, ClientError) and _code(exc) == "AlreadyExistsException"):
                raise


def _context(version: int, aad: bytes) -> dict[str, str]:
    # The "b64:" prefix keeps the value non-empty for an empty aad.
    return {"kek-version": str(version), "aad": "b64:" + base64.b64encode(aad).decode("ascii")}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))


def _raise_provider_error(operation: str, exc: Exception) -> NoReturn:
    # Only the error code or class: KMS messages name ARNs and principals, and never matter to
    # the caller; the chained exception keeps them for a debugger.
    what = _code(exc) if isinstance(exc, ClientError) else type(exc).__name__
    raise KekProviderError(f"AWS KMS {operation} failed: {what}") from exc


async def _run(operation: str, fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking boto3 call in a thread, translating botocore errors."""
    try:
        return await asyncio.to_thread(fn, *args)
    except (ClientError, BotoCoreError) as exc:
        _raise_provider_error(operation, exc)


def _make_client(uri: KmsUri) -> KMSClient:
    config = Config(
        connect_timeout=uri.connect_timeout_s,
        read_timeout=uri.read_timeout_s,
        retries={"max_attempts": uri.max_attempts, "mode": "standard"},
        user_agent_extra="calendar-gateway",
    )
    # A fresh Session: boto3's default session is module state shared with other code.
    return boto3.session.Session().client(
        "kms", region_name=uri.region, endpoint_url=uri.endpoint, config=config
    )
