"""Keeping Google access tokens alive: refresh ahead of expiry, once, for every process.

`TokenManager.access_token(id)` answers from the database while the stored access token has
more than `margin_s` left; otherwise it refreshes. A refresh is single-flight:

* within a process, one `asyncio.Lock` per integration (created on demand, dropped once nobody
  holds or waits for it) queues the callers; each re-reads the row when its turn comes, so only
  the first calls Google and the rest read its result;
* across processes on PostgreSQL, the refresh runs in one transaction that reads the row
  `SELECT ... FOR UPDATE`, calls Google, stores the result and commits. Another process's locked
  read waits for that commit and then (READ COMMITTED re-reads a row it waited for) sees the
  fresh token, so it does not call Google. A disconnect or reconnect updating the row also waits
  for the refresh instead of racing it;
* on SQLite (one process), the in-process lock is the single flight; the row is read, Google
  called and the result written in a short transaction of its own, so no SQLite write lock is
  held during the HTTP call. The write is a compare-and-set on the refresh token and status.

Outcomes of a refresh:

* success: the new access token (and a rotated refresh token, if Google sent one) is sealed and
  stored in one UPDATE with its expiry and `last_refresh_at`; routine success is not audited
  (one entry per hour per integration would drown the log); a rotation is;
* `invalid_grant`: Google killed the grant. The integration goes active -> needs_reauth with
  `reauth_reason`, its sealed access token is dropped, an audit entry is written in the same
  transaction, then the reauth hooks run (the sync engine stops watch channels there), and the
  caller gets `IntegrationInactive`;
* transient (5xx, 429, timeouts): retried by the `RetryPolicy` within its budget, audited once
  if it still fails, and raised as `TransientGoogleError`; never a reauth. A stored access
  token that is still valid (inside the margin, not yet expired) is served instead of failing,
  which is the reason to refresh ahead of time. For `failure_cooldown_s` afterwards, callers
  in this process get the same error at once (no Google call, no further audit entry) rather
  than each spending another retry budget against a Google that is down.

Disconnect step 2 (stopping watch channels before the revocation) gets its tokens here too,
through `disconnect_source`: the same stored tokens and the same single flight, also while the
integration is `disconnecting`. A refresh the sync engine started just before the disconnect
was requested is therefore waited for and shared, never repeated; a refresh token Google
rotates meanwhile is stored (the row stays writable while disconnecting) so that step 3 revokes
the grant that is really alive. A dead grant found then does not turn a disconnecting
integration into needs_reauth.

The queued refresh runs as a task the caller awaits shielded: a caller cancelled mid-refresh
does not abandon it, so a refresh token Google has just rotated is always stored.

Nothing here decrypts a token of an integration that is neither active nor (for the
disconnect's own use) disconnecting, and no token reaches a
log line, an exception message or an audit entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.audit import AuditLog
from gateway.clock import utc_now
from gateway.connections.errors import IntegrationInactive
from gateway.connections.model import (
    PURPOSE_ACCESS_TOKEN,
    PURPOSE_REFRESH_TOKEN,
    Integration,
    Status,
)
from gateway.connections.repository import IntegrationRepository, SealedTokens
from gateway.connections.sealing import open_token, seal_grant
from gateway.errors import NotFound
from gateway.google.calendar import TokenSource
from gateway.google.errors import (
    GoogleError,
    InvalidGrant,
    TransientGoogleError,
)
from gateway.google.oauth_client import TokenGrant, TokenRefresher
from gateway.google.retry import RetryPolicy, Sleep
from gateway.observability.metrics import TOKEN_REFRESHES
from vault.errors import InvalidCiphertext, VaultError
from vault.service import Vault

log = logging.getLogger(__name__)

ReauthHook = Callable[[Integration], Awaitable[None]]
"""Called once after an integration moved to needs_reauth (e.g. to stop its watch channels)."""
QueueHook = Callable[[str], None]
"""Called with the integration id when a caller queues behind a refresh already in flight in
this process (tests use it to act while the caller waits)."""

# Whom tokens are served for: agents' calls (sync, availability, booking) only while active;
# the disconnect's step 2 (stopping watch channels) also while disconnecting.
_ACTIVE = frozenset({Status.ACTIVE})
_ACTIVE_OR_DISCONNECTING = frozenset({Status.ACTIVE, Status.DISCONNECTING})

# A caller holding a user's request should not wait long: three tries within five seconds.
DEFAULT_REFRESH_RETRY = RetryPolicy(attempts=3, base_s=0.25, max_s=2.0, budget_s=5.0)
# A stored token with less than this left is not served when a refresh fails: the caller's
# Calendar call would likely arrive after it expired.
MIN_SERVABLE_S = 30
# Audit `action` of everything this module records.
AUDIT_ACTION = "refresh"
# reauth_reason of an integration whose sealed refresh token no longer opens.
UNOPENABLE_REASON = "token_unopenable"


@dataclass
class _Flight:
    """One integration's in-process lock; `users` counts holders and waiters so the entry is
    dropped when nobody needs it, and `generation` counts finished refreshes so a caller that
    queued knows whether one completed while it waited."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0
    generation: int = 0


class TokenManager:
    """Hands out valid Google access tokens for active integrations (see the module doc)."""

    def __init__(
        self,
        *,
        repository: IntegrationRepository,
        vault: Vault,
        oauth: TokenRefresher,
        audit: AuditLog,
        clock: Callable[[], datetime] = utc_now,
        margin_s: float = 300.0,
        retry: RetryPolicy = DEFAULT_REFRESH_RETRY,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        reauth_hooks: Iterable[ReauthHook] = (),
        max_concurrent_refreshes: int = 5,
        failure_cooldown_s: float = 5.0,
        queue_hook: QueueHook | None = None,
    ) -> None:
        self._repo = repository
        self._vault = vault
        self._oauth = oauth
        self._audit = audit
        self._clock = clock
        self._margin = timedelta(seconds=margin_s)
        self._retry = retry
        self._sleep = sleep
        self._rng = rng
        self.reauth_hooks: list[ReauthHook] = list(reauth_hooks)
        self._flights: dict[str, _Flight] = {}
        # Transient refresh failures of the last `failure_cooldown_s`, by integration: callers
        # arriving meanwhile get the same error at once instead of each spending a retry
        # budget against a Google that is down (and each writing an audit entry).
        self._failures: dict[str, tuple[datetime, TransientGoogleError]] = {}
        self._failure_cooldown = timedelta(seconds=failure_cooldown_s)
        # Only PostgreSQL has row locks worth holding across the HTTP call.
        self._cross_process = repository.engine.dialect.name == "postgresql"
        # A PostgreSQL refresh holds a pooled connection for its whole transaction and may need
        # a second one (vault key lookup, audit); bounding refreshes in flight keeps the pool
        # from being exhausted by holders all waiting for a second connection.
        self._refresh_slots = asyncio.Semaphore(max_concurrent_refreshes)
        self._queue_hook = queue_hook

    def __repr__(self) -> str:
        margin_s = self._margin.total_seconds()
        return f"TokenManager(margin_s={margin_s:g}, refreshing={len(self._flights)})"

    def add_reauth_hook(self, hook: ReauthHook) -> None:
        """Run `hook(integration)` whenever a refresh moves an integration to needs_reauth."""
        self.reauth_hooks.append(hook)

    # -- public API ---------------------------------------------------------------------------

    async def access_token(self, integration_id: str, *, request_id: str | None = None) -> str:
        """A Google access token for the integration, valid for more than the margin if at all
        possible (refreshed if needed).

        Raises NotFound (no such integration), IntegrationInactive (not active, or Google
        just refused the grant), TransientGoogleError (Google unavailable beyond the retry
        budget and no stored token still usable), or another GoogleError (misconfiguration).
        """
        return await self._access_token(integration_id, _ACTIVE, request_id=request_id)

    async def force_refresh(
        self,
        integration_id: str,
        *,
        stale_access_token: str | None = None,
        request_id: str | None = None,
    ) -> str:
        """Refresh now, e.g. after the Calendar API answered 401 to `stale_access_token`.

        If another caller has already replaced that token, the replacement is returned without
        calling Google. Raises like `access_token`.
        """
        return await self._force_refresh(
            integration_id, _ACTIVE, stale=stale_access_token, request_id=request_id
        )

    def disconnect_source(self, integration_id: str) -> TokenSource:
        """The Calendar client's `TokenSource` for disconnect step 2 (stopping watch channels
        before the grant is revoked): the same tokens and the same single-flight refresh as
        `access_token` and `force_refresh`, also while the integration is `disconnecting`.

        A refresh that finds the grant dead does not move a disconnecting integration to
        needs_reauth (the disconnect goes on); the caller gets `IntegrationInactive`.
        """
        return _DisconnectSource(self, integration_id)

    async def prepared(self, integration_id: str) -> tuple[Integration, TokenSource] | None:
        """The integration (None: no such row) and a `TokenSource` for it, from ONE read: the
        source's first access token comes from the tokens read here (opened if fresh, else
        refreshed as `access_token` does), later ones as `access_token`'s. A sync needs the
        integration (is it usable, its owner tag) and a token right after: one read of the
        row instead of two."""
        found = await self._repo.read_for_refresh(integration_id)
        if found is None:
            return None
        integration, sealed = found
        return integration, _PreparedSource(self, integration, sealed)

    async def _access_token(
        self, integration_id: str, usable: frozenset[Status], *, request_id: str | None
    ) -> str:
        integration, sealed = await self._read_usable(integration_id, usable)
        return await self._token_from(integration, sealed, usable, request_id=request_id)

    async def _token_from(
        self,
        integration: Integration,
        sealed: SealedTokens,
        usable: frozenset[Status],
        *,
        request_id: str | None,
    ) -> str:
        """The access token of a row just read (`_read_usable` checked it is usable)."""
        if self._fresh(sealed, self._clock()):
            with contextlib.suppress(InvalidCiphertext):  # the refresh below decides
                return await self._open_access(integration, sealed)
        return await self._single_flight(integration.id, usable, request_id=request_id, stale=None)

    async def _force_refresh(
        self,
        integration_id: str,
        usable: frozenset[Status],
        *,
        stale: str | None,
        request_id: str | None,
    ) -> str:
        await self._read_usable(integration_id, usable)
        return await self._single_flight(
            integration_id, usable, request_id=request_id, stale=stale, forced=True
        )

    # -- single flight --------------------------------------------------------------------------

    async def _single_flight(
        self,
        integration_id: str,
        usable: frozenset[Status],
        *,
        request_id: str | None,
        stale: str | None,
        forced: bool = False,
    ) -> str:
        """Queue on the integration's in-process lock, then refresh unless the row no longer
        needs it.

        The queued work runs as its own task and the caller awaits it shielded: a caller
        cancelled mid-refresh (its client went away) must not abandon a refresh Google has
        already answered, because a rotated refresh token that is never stored is lost for
        good and the next refresh would kill the integration.
        """
        flight = self._flights.get(integration_id)
        if flight is None:
            flight = self._flights[integration_id] = _Flight()
        # Counted from here until the task ends, so the entry lives exactly as long as someone
        # holds or waits for its lock: the map holds only integrations being refreshed now.
        flight.users += 1
        if self._queue_hook is not None and flight.lock.locked():
            self._queue_hook(integration_id)
        task = asyncio.ensure_future(
            self._queued_refresh(integration_id, usable, flight, request_id, stale, forced)
        )
        # If the caller is gone, nobody reads the outcome; retrieve it so it is not reported.
        task.add_done_callback(lambda t: None if t.cancelled() else t.exception())
        return await asyncio.shield(task)

    async def _queued_refresh(
        self,
        integration_id: str,
        usable: frozenset[Status],
        flight: _Flight,
        request_id: str | None,
        stale: str | None,
        forced: bool,
    ) -> str:
        seen = flight.generation
        try:
            async with flight.lock:
                # A forced refresh without a token to compare accepts one that finished while
                # it queued: that refresh is newer than whatever made the caller force.
                if flight.generation != seen and stale is None:
                    forced = False
                try:
                    return await self._refresh_locked(
                        integration_id, usable, request_id=request_id, stale=stale, forced=forced
                    )
                finally:
                    flight.generation += 1
        finally:
            flight.users -= 1
            if flight.users == 0:
                del self._flights[integration_id]

    def _recent_failure(self, integration_id: str, now: datetime) -> TransientGoogleError | None:
        """A copy of the integration's transient failure if it is younger than the cooldown."""
        entry = self._failures.get(integration_id)
        if entry is None:
            return None
        at, error = entry
        if now - at >= self._failure_cooldown:
            del self._failures[integration_id]
            return None
        return TransientGoogleError(
            error.message,
            retry_after_s=error.retry_after_s,
            google_status=error.google_status,
            google_error=error.google_error,
        )

    def _remember_failure(
        self, integration_id: str, now: datetime, error: TransientGoogleError
    ) -> None:
        # Expired entries go first, so the map holds only integrations failing right now.
        expired = [k for k, (at, _) in self._failures.items() if now - at >= self._failure_cooldown]
        for key in expired:
            del self._failures[key]
        self._failures[integration_id] = (now, error)

    @asynccontextmanager
    async def _refresh_transaction(self) -> AsyncIterator[AsyncConnection | None]:
        """PostgreSQL: one transaction for read-lock, Google call and write. SQLite: none (each
        step opens its own short one), so no write lock is held during the HTTP call."""
        async with self._refresh_slots:
            if self._cross_process:
                async with self._repo.engine.begin() as conn:
                    yield conn
            else:
                yield None

    @asynccontextmanager
    async def _writes(self, conn: AsyncConnection | None) -> AsyncIterator[AsyncConnection]:
        """The refresh's transaction, or (SQLite) a short one for the writes that go together."""
        if conn is not None:
            yield conn
        else:
            async with self._repo.engine.begin() as own:
                yield own

    async def _refresh_locked(
        self,
        integration_id: str,
        usable: frozenset[Status],
        *,
        request_id: str | None,
        stale: str | None,
        forced: bool,
    ) -> str:
        """Re-read under the lock; refresh if still needed; store. Failures are recorded (audit,
        status) in the transaction and raised only after it has committed."""
        failure: GoogleError
        reauthed: Integration | None = None
        async with self._refresh_transaction() as conn:
            found = await self._repo.read_for_refresh(integration_id, conn, lock=True)
            integration, sealed = self._require_usable(found, integration_id, usable)
            now = self._clock()
            if self._fresh(sealed, now):
                try:
                    current = await self._open_access(integration, sealed)
                except InvalidCiphertext:
                    forced = True  # the stored token cannot serve; the refresh decides
                else:
                    if not forced or (stale is not None and current != stale):
                        return current
            recent = self._recent_failure(integration_id, now)
            if recent is not None:
                if self._servable(sealed, now) and not forced:
                    return await self._open_access(integration, sealed)
                raise recent
            if sealed.refresh_token is None:
                # An active integration without a refresh token cannot be kept alive.
                failure = InvalidGrant("missing_refresh_token", google_status=None)
            else:
                try:
                    grant = await self._call_google(integration, sealed.refresh_token)
                except GoogleError as exc:
                    failure = exc
                    TOKEN_REFRESHES.labels(
                        exc.reason if isinstance(exc, InvalidGrant) else exc.code
                    ).inc()
                else:
                    TOKEN_REFRESHES.labels("ok").inc()
                    self._failures.pop(integration_id, None)
                    return await self._store(
                        integration, sealed, grant, now, conn, request_id, usable
                    )
            async with self._writes(conn) as wconn:
                if isinstance(failure, InvalidGrant):
                    if await self._repo.mark_needs_reauth(
                        integration_id, reason=failure.reason, at=now, conn=wconn
                    ):
                        reauthed = replace(
                            integration, status=Status.NEEDS_REAUTH, reauth_reason=failure.reason
                        )
                    await self._record(
                        integration, failure.reason, request_id, wconn, reauthed=bool(reauthed)
                    )
                else:
                    await self._record(integration, failure.code, request_id, wconn, error=failure)
            if isinstance(failure, TransientGoogleError):
                self._remember_failure(integration_id, self._clock(), failure)
                if self._servable(sealed, now) and not forced:
                    # Still valid for a while: serve it; the next call past the margin retries.
                    log.warning(
                        "refresh failed (%s) integration=%s; serving the stored token",
                        failure.code,
                        integration_id,
                    )
                    return await self._open_access(integration, sealed)
        if reauthed is not None:
            await self._run_reauth_hooks(reauthed)
        if isinstance(failure, InvalidGrant):
            # A disconnecting integration stays so (mark_needs_reauth moves active ones only).
            status = (
                Status.NEEDS_REAUTH if integration.status is Status.ACTIVE else integration.status
            )
            raise IntegrationInactive(status, reason=failure.reason) from failure
        raise failure

    async def _call_google(self, integration: Integration, sealed_refresh: bytes) -> TokenGrant:
        try:
            refresh_token = await open_token(
                self._vault,
                integration.tenant_id,
                integration.id,
                PURPOSE_REFRESH_TOKEN,
                sealed_refresh,
            )
        except InvalidCiphertext:
            # The grant is as lost to us as if Google had killed it (a backup restored after
            # its data key's KEK version was retired, or tampering): the user must connect
            # again, which the connect flow allows by replacing the data key.
            raise InvalidGrant(UNOPENABLE_REASON, google_status=None) from None
        return await self._retry.run(
            lambda: self._oauth.refresh(refresh_token), sleep=self._sleep, rng=self._rng
        )

    async def _store(
        self,
        integration: Integration,
        sealed: SealedTokens,
        grant: TokenGrant,
        sent_at: datetime,
        conn: AsyncConnection | None,
        request_id: str | None,
        usable: frozenset[Status],
    ) -> str:
        """Seal and store a refresh's result; return the new access token."""
        assert sealed.refresh_token is not None
        # Expiry counts from when we asked, not when the answer arrived: never later than real.
        # (The OAuth client refuses a refresh answer without a lifetime.)
        expires_at = grant.expires_at(sent_at)
        assert expires_at is not None
        fresh = await seal_grant(
            self._vault, integration.tenant_id, integration.id, grant, expires_at=expires_at
        )
        assert fresh.access_token is not None
        async with self._writes(conn) as wconn:
            stored = await self._repo.store_refreshed_tokens(
                integration.id,
                expected_refresh_token=sealed.refresh_token,
                access_token=fresh.access_token,
                access_token_expires_at=expires_at,
                refresh_token=fresh.refresh_token,
                refreshed_at=self._clock(),
                conn=wconn,
            )
            if stored and grant.rotated:
                await self._audit.record(
                    AUDIT_ACTION,
                    "rotated",
                    tenant_id=integration.tenant_id,
                    integration_id=integration.id,
                    request_id=request_id,
                    conn=wconn,
                )
        if not stored:
            # A disconnect's deletion of the tokens, or a reconnect, changed the row while we
            # talked to Google (SQLite; on PostgreSQL the row lock prevents it). It wins; what
            # we got is not stored.
            await self._read_usable(integration.id, usable)
            log.info("refresh result not stored: integration=%s changed meanwhile", integration.id)
        return grant.access_token

    # -- helpers ----------------------------------------------------------------------------------

    async def _read_usable(
        self, integration_id: str, usable: frozenset[Status]
    ) -> tuple[Integration, SealedTokens]:
        return self._require_usable(
            await self._repo.read_for_refresh(integration_id), integration_id, usable
        )

    @staticmethod
    def _require_usable(
        found: tuple[Integration, SealedTokens] | None,
        integration_id: str,
        usable: frozenset[Status],
    ) -> tuple[Integration, SealedTokens]:
        if found is None:
            raise NotFound(f"no integration {integration_id}")
        integration, sealed = found
        if integration.status not in usable:
            raise IntegrationInactive(integration.status, reason=integration.reauth_reason)
        return integration, sealed

    def _fresh(self, sealed: SealedTokens, now: datetime) -> bool:
        """Whether the stored access token has more than the margin left."""
        expires_at = sealed.access_token_expires_at
        return (
            sealed.access_token is not None
            and expires_at is not None
            and expires_at - now > self._margin
        )

    @staticmethod
    def _servable(sealed: SealedTokens, now: datetime) -> bool:
        """Whether the stored token may still be handed out when a refresh failed."""
        expires_at = sealed.access_token_expires_at
        return (
            sealed.access_token is not None
            and expires_at is not None
            and expires_at - now > timedelta(seconds=MIN_SERVABLE_S)
        )

    async def _open_access(self, integration: Integration, sealed: SealedTokens) -> str:
        assert sealed.access_token is not None
        return await open_token(
            self._vault,
            integration.tenant_id,
            integration.id,
            PURPOSE_ACCESS_TOKEN,
            sealed.access_token,
        )

    async def _record(
        self,
        integration: Integration,
        outcome: str,
        request_id: str | None,
        conn: AsyncConnection,
        *,
        error: GoogleError | None = None,
        reauthed: bool = False,
    ) -> None:
        """One audit entry for a failed refresh: codes only, no token, email or description."""
        detail: dict[str, str | int | bool | None] = {}
        if error is not None and error.google_status is not None:
            detail["google_status"] = error.google_status
        if error is not None and error.google_error is not None:
            detail["google_error"] = error.google_error
        if reauthed:
            detail["status"] = Status.NEEDS_REAUTH.value
        await self._audit.record(
            AUDIT_ACTION,
            outcome,
            tenant_id=integration.tenant_id,
            integration_id=integration.id,
            request_id=request_id,
            detail=detail or None,
            conn=conn,
        )

    async def _run_reauth_hooks(self, integration: Integration) -> None:
        """Run every hook; one failing must not stop the others or hide the reauth."""
        for hook in list(self.reauth_hooks):
            try:
                await hook(integration)
            except Exception:
                log.exception("reauth hook failed for integration=%s", integration.id)


class _DisconnectSource:
    """`TokenManager.disconnect_source`: a `TokenSource` over the manager that also serves a
    `disconnecting` integration. The vault failing to open a token (the key provider down, or
    a blob that no longer opens) means no token for this best-effort step: IntegrationInactive.
    Never logs or shows a token."""

    def __init__(self, manager: TokenManager, integration_id: str) -> None:
        self._manager = manager
        self._integration_id = integration_id

    def __repr__(self) -> str:
        return f"_DisconnectSource({self._integration_id!r})"

    async def access_token(self) -> str:
        try:
            return await self._manager._access_token(
                self._integration_id, _ACTIVE_OR_DISCONNECTING, request_id=None
            )
        except VaultError:
            raise IntegrationInactive(Status.DISCONNECTING) from None

    async def refreshed_token(self, stale: str) -> str:
        try:
            return await self._manager._force_refresh(
                self._integration_id, _ACTIVE_OR_DISCONNECTING, stale=stale, request_id=None
            )
        except VaultError:
            raise IntegrationInactive(Status.DISCONNECTING) from None


class _PreparedSource:
    """`TokenManager.prepared`: a `TokenSource` whose first access token comes from the row
    read with the integration; later calls read again. Never logs or shows a token."""

    def __init__(self, manager: TokenManager, integration: Integration, sealed: SealedTokens):
        self._manager = manager
        self._integration = integration
        self._sealed: SealedTokens | None = sealed

    def __repr__(self) -> str:
        return f"_PreparedSource({self._integration.id!r})"

    async def access_token(self) -> str:
        sealed, self._sealed = self._sealed, None
        if sealed is None:
            return await self._manager.access_token(self._integration.id)
        integration, sealed = self._manager._require_usable(
            (self._integration, sealed), self._integration.id, _ACTIVE
        )
        return await self._manager._token_from(integration, sealed, _ACTIVE, request_id=None)

    async def refreshed_token(self, stale: str) -> str:
        return await self._manager.force_refresh(self._integration.id, stale_access_token=stale)
