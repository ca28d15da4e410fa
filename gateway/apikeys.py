"""API keys: how internal callers (the agent's backend) authenticate to the gateway.

A key looks like `cgw_<key_id>_<secret>`. `key_id` is public (lists, logs, audit); the secret
is 256 random bits shown once at creation and stored only as its SHA-256. A key belongs to one
tenant and carries scopes; every operation names the scope it needs.

With `cache=True` (the server) a verified key is remembered in memory, by the SHA-256 of the
whole presented value, so a warm request reads no database. The store is then a Subscriber of
gateway.db.notify: a revocation (this process, another process through NOTIFY) drops it, a
write by another connection to an SQLite server's file (the CLI beside it, noticed by
`external_write`) makes it check the keys it holds, and a key id once revoked is never cached
again. While the change feed is down (`reset(usable=False)`) nothing is answered from
memory.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import RowMapping, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.clock import utc_now
from gateway.db.bulk import chunks
from gateway.db.notify import Change, key_revoked
from gateway.db.schema import api_keys
from gateway.db.values import as_utc
from gateway.errors import InvalidInput, NotFound, Unauthenticated

SCOPES = (
    "connections:read",
    "connections:write",
    "calendar:read",
    "calendar:write",
    "webhooks:read",
    "webhooks:write",
)
KEY_PREFIX = "cgw_"
_KEY_RE = re.compile(r"^cgw_([0-9a-f]{24})_([A-Za-z0-9_-]{43})$")
_TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Verified keys remembered at most; beyond, the memory starts over (callers use a few keys).
CACHE_MAX_KEYS = 10_000

# Built once: every authenticated request runs it, and a statement built per call costs its
# construction and cache-key generation each time (SQLAlchemy memoizes both on the object).
_BY_KEY_ID = select(api_keys).where(api_keys.c.key_id == bindparam("key_id"))
# The held keys still valid, as `external_write` checks them. A key's secret never changes
# (a new secret is a new key id), so its id, tenant and scopes say whether a cached principal
# still holds.
_UNREVOKED = select(api_keys.c.key_id, api_keys.c.tenant_id, api_keys.c.scopes).where(
    api_keys.c.key_id.in_(bindparam("key_ids", expanding=True)), api_keys.c.revoked_at.is_(None)
)


def check_tenant_id(tenant_id: str) -> str:
    """Tenant ids are short, printable and safe in URLs and logs."""
    if not _TENANT_RE.match(tenant_id):
        raise InvalidInput(
            "tenant must be 1-64 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            code="invalid_tenant",
        )
    return tenant_id


def parse_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """Validate scope names; at least one is needed."""
    wanted = frozenset(s.strip() for s in scopes if s.strip())
    unknown = sorted(wanted - set(SCOPES))
    if unknown:
        raise InvalidInput(
            f"unknown scope {', '.join(unknown)}; known scopes: {', '.join(SCOPES)}",
            code="invalid_scope",
        )
    if not wanted:
        raise InvalidInput(
            f"at least one scope is needed: {', '.join(SCOPES)}", code="invalid_scope"
        )
    return wanted


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii")).digest()


@dataclass(frozen=True)
class ApiKey:
    """What is stored about a key (no secret)."""

    key_id: str
    tenant_id: str
    name: str | None
    scopes: frozenset[str]
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class NewApiKey:
    """A key just created: the only time its full value exists outside the caller's hands."""

    key: ApiKey
    value: str = field(repr=False)


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of a request."""

    tenant_id: str
    key_id: str
    scopes: frozenset[str]


class ApiKeyStore:
    """Creates, lists, revokes and verifies API keys in the database."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Callable[[], datetime] = utc_now,
        token_bytes: Callable[[int], bytes] = secrets.token_bytes,
        cache: bool = False,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._token_bytes = token_bytes
        self._cache_enabled = cache
        # SHA-256 of the presented value -> its principal; only while the feed is usable.
        self._verified: dict[bytes, Principal] = {}
        self._revoked: set[str] = set()
        self._usable = False
        self._epoch = 0

    def __repr__(self) -> str:
        return f"ApiKeyStore(cached={len(self._verified)})"

    async def create(
        self, tenant_id: str, scopes: Iterable[str], name: str | None = None
    ) -> NewApiKey:
        tenant_id = check_tenant_id(tenant_id)
        granted = parse_scopes(scopes)
        if name is not None and len(name) > 200:
            raise InvalidInput("name must be at most 200 characters", code="invalid_name")
        key_id = self._token_bytes(12).hex()
        # urlsafe base64 of 32 bytes without padding: 43 characters.
        secret = base64.urlsafe_b64encode(self._token_bytes(32)).rstrip(b"=").decode("ascii")
        record = ApiKey(key_id, tenant_id, name, granted, self._clock(), None)
        async with self._engine.begin() as conn:
            await conn.execute(
                api_keys.insert().values(
                    key_id=key_id,
                    tenant_id=tenant_id,
                    name=name,
                    scopes=" ".join(sorted(granted)),
                    secret_sha256=_digest(secret),
                    created_at=record.created_at,
                )
            )
        return NewApiKey(record, f"{KEY_PREFIX}{key_id}_{secret}")

    async def list(self, tenant_id: str | None = None) -> list[ApiKey]:
        query = select(api_keys).order_by(api_keys.c.tenant_id, api_keys.c.created_at)
        if tenant_id is not None:
            query = query.where(api_keys.c.tenant_id == tenant_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_to_key(row) for row in rows]

    async def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key (idempotent: revoking twice keeps the first time)."""
        async with self._engine.begin() as conn:
            await conn.execute(
                update(api_keys)
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=self._clock())
            )
            await key_revoked(conn, key_id)
            row = (await conn.execute(_BY_KEY_ID, {"key_id": key_id})).mappings().first()
        if row is None:
            raise NotFound(f"no API key with id {key_id!r}", code="api_key_not_found")
        return _to_key(row)

    async def authenticate(self, presented: str) -> Principal:
        """Verify a presented key. Every failure is the same 401, so a caller learns nothing
        about which part was wrong."""
        match = _KEY_RE.match(presented)
        if match is None:
            raise Unauthenticated("missing or invalid API key")
        key_id, secret = match[1], match[2]
        presented_sha256 = b""
        if self._cache_enabled:
            presented_sha256 = _digest(presented)
            known = self._verified.get(presented_sha256) if self._usable else None
            if known is not None:
                return known
        epoch = self._epoch
        async with self._engine.connect() as conn:
            row = (await conn.execute(_BY_KEY_ID, {"key_id": key_id})).mappings().first()
        if row is None or not hmac.compare_digest(row["secret_sha256"], _digest(secret)):
            raise Unauthenticated("missing or invalid API key")
        if row["revoked_at"] is not None:
            raise Unauthenticated("missing or invalid API key")
        who = Principal(row["tenant_id"], key_id, frozenset(row["scopes"].split()))
        # Kept only if nothing was revoked or reset while the row was read.
        if (
            self._cache_enabled
            and self._usable
            and epoch == self._epoch
            and key_id not in self._revoked
        ):
            if len(self._verified) >= CACHE_MAX_KEYS:
                self._verified.clear()
            self._verified[presented_sha256] = who
        return who

    # -- Subscriber (gateway.db.notify) ---------------------------------------------------------

    def changed(self, change: Change) -> None:
        if change.kind != "key":
            return
        self._revoked.add(change.id)
        self._epoch += 1
        for digest in [d for d, p in self._verified.items() if p.key_id == change.id]:
            del self._verified[digest]

    def reset(self, *, usable: bool) -> None:
        self._epoch += 1
        self._verified.clear()
        self._usable = usable

    async def external_write(self) -> None:
        """Another connection committed (SQLite's watcher, gateway.db.listener): perhaps the CLI
        beside `serve` revoking a key, far more often this process's own writes, which
        `data_version` cannot tell apart. The keys held are read again, in one statement, and
        only those revoked, gone or changed are dropped. Dropping all of them made every
        request of the next moment read its key again, after every sync's commit (0.4 key
        reads per pushed change in `bench sync`)."""
        self._epoch += 1  # a read in flight may predate the write: its answer is not kept
        held = {p.key_id for p in self._verified.values()}
        if not held:
            return
        try:
            current: dict[str, tuple[str, frozenset[str]]] = {}
            async with self._engine.connect() as conn:
                for chunk in chunks(sorted(held)):
                    rows = await conn.execute(_UNREVOKED, {"key_ids": list(chunk)})
                    for key_id, tenant_id, scopes in rows:
                        current[key_id] = (tenant_id, frozenset(scopes.split()))
        except BaseException:
            self._verified.clear()  # unchecked, nothing held may be trusted
            raise
        # A key verified meanwhile was read after the write: it stays.
        for digest, who in list(self._verified.items()):
            if who.key_id in held and current.get(who.key_id) != (who.tenant_id, who.scopes):
                del self._verified[digest]


def _to_key(row: RowMapping) -> ApiKey:
    created_at = as_utc(row["created_at"])
    assert created_at is not None
    return ApiKey(
        key_id=row["key_id"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        scopes=frozenset(row["scopes"].split()),
        created_at=created_at,
        revoked_at=as_utc(row["revoked_at"]),
    )
