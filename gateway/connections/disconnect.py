"""Disconnecting an integration: the durable job behind the policy's promise that when a user
disconnects, "all tokens will be destroyed".

The steps, in this order (`integrations.disconnect_step` holds the last one COMPLETED):

    1. mark `disconnecting`      one guarded UPDATE; agent calls stop at once (the token
                                 manager serves `active` integrations only)
    2. stop watch channels       hooks registered by the sync engine, given the grant while
                                 it still works (`channels.stop` needs a valid token, so
                                 this comes before the revocation); best effort, bounded
    3. revoke at Google          the refresh token is opened with the vault and revoked,
                                 retrying transient failures within the retry budget
    4. purge synced records      hooks; the sealed token blobs are deleted in the same write
                                 that records the step
    5. destroy the data key      `vault.destroy`: every blob ever sealed for the integration
                                 can no longer be opened (crypto-shredding), here and in
                                 backups taken from now on; an older backup holds the key row
                                 until its KEK version is retired (docs/operations.md)
    6. receipt + audit entry     status `disconnected`, the signed receipt (receipts.py; its
                                 own table, kept for good) and the audit entry in one
                                 transaction

Step 6 first appends the integration to the deletion journal (journal.py, a file outside the
database), so restoring a database backup taken before this disconnect cannot bring its
tokens back (reshred.py). Step 4 notes the data key's id and KEK version for the
receipt before step 5 destroys it.

Durability. The job lives on the integration row. A process works on it only while it holds
the row's lease (taken by an atomic UPDATE when free or expired, renewed by every step's write),
and each step's completion is written with a guard on the lease owner and the previous step.
A process that dies leaves the lease to expire; any process (the DELETE handler, or the
resumer every gateway runs in the background) then continues from `disconnect_step + 1`.

Idempotency, which makes redoing the interrupted step safe:
    1  only from a state that is not already disconnecting/disconnected
    2, 4  hooks must be idempotent (they are called again after a crash); clearing the token
       columns twice is harmless
    3  revoking a revoked grant answers `invalid_token`, which counts as revoked
    5  `vault.destroy` of a destroyed key returns `destroyed=False` and changes nothing
    6  the guarded UPDATE succeeds once, and the audit entry commits with it (exactly once)

The outcome of step 3 is written with step 3 (the progress JSON in `disconnect_receipt`), so a
resume after it reports what really happened.

Step 2's hooks get their `TokenSource` from the TokenManager (`disconnect_source`, see
tokens.py): the one single-flight refresh serves this `disconnecting` integration too, so a
refresh already in flight (the sync engine's, say) is shared, not repeated, and a refresh token
Google rotates is stored, so step 3 revokes the grant that is really alive.

`revoked_at_google` in the receipt is True when Google confirmed, during this disconnect, that
the integration's grant no longer gives access: it answered 200 to our revocation of the refresh
token, or `invalid_token` for it (the grant was already revoked, by the user at Google or by an
earlier attempt, or had expired). It does NOT mean that our call was the one that revoked it
(the audit entry's `revocation` says which: `revoked` or `already_revoked`). It is False when
no such confirmation was obtained: Google kept failing past the retry budget or gave an
unexpected answer, no Google client is configured, the stored token could not be opened, no
token was stored, or only an access token was stored and Google did not know it (an expired
access token proves nothing about the grant). Tokens are destroyed in every case; with False,
the user can still remove the app's access in their Google account.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from gateway.audit import AuditLog
from gateway.clock import Clock, rfc3339, utc_now
from gateway.connections.errors import IntegrationInactive
from gateway.connections.journal import DeletionJournal
from gateway.connections.model import (
    PURPOSE_ACCESS_TOKEN,
    PURPOSE_REFRESH_TOKEN,
    Integration,
    Status,
)
from gateway.connections.receipt_store import ReceiptStore
from gateway.connections.receipts import SignedReceipt, sign_receipt
from gateway.connections.repository import IntegrationRepository
from gateway.connections.sealing import open_token
from gateway.connections.tokens import TokenManager
from gateway.google.calendar import TokenSource
from gateway.google.errors import GoogleError
from gateway.google.oauth_client import TokenRevoker
from gateway.google.retry import RetryPolicy
from vault.errors import KekProviderError, KeyringError, VaultError
from vault.service import Vault
from vault.trust import Signer

log = logging.getLogger(__name__)

LAST_STEP = 6

Sleep = Callable[[float], Awaitable[object]]
StepHook = Callable[[int], None]
"""Called with a step's number right after the step's completion was written."""

IntegrationHook = Callable[[Integration], Awaitable[int]]
"""A sync-engine hook: does its part for the integration and returns how many things it
stopped or deleted in this call."""

ChannelStopper = Callable[[Integration, TokenSource], Awaitable[int]]
"""A step-2 hook: like `IntegrationHook`, and given the integration's still-working grant to
call Google with."""


class ReceiptSigning(Protocol):
    """Where the receipt-signing key comes from (`vault.trust.TrustKeys`)."""

    async def signer(self) -> Signer:
        """The current signing key."""
        ...


@dataclass
class DisconnectHooks:
    """Where the sync engine plugs into steps 2 and 4 (register from its `setup(app)` through
    `gateway.http.disconnect_routes.disconnect_hooks(app)`).

    Every hook receives the integration (status `disconnecting`), must be idempotent (after a
    crash the step runs again) and returns a count for the receipt. Raising fails the step: the
    job stops there and is retried later, so a hook that cannot finish must raise, never
    pretend. Channel stoppers run BEFORE the grant is revoked and get a `TokenSource` for it,
    because Google stops a channel only for a valid token. They must bound their time (the
    step must end well within the job's lease) and should not raise for Google's failures: a
    channel that cannot be stopped is forgotten locally (its notifications are refused from
    then on) and ends at its expiration. Record purgers run after the revocation.
    """

    channel_stoppers: list[ChannelStopper] = field(default_factory=list)
    record_purgers: list[IntegrationHook] = field(default_factory=list)


class Revocation(StrEnum):
    """How step 2 ended (kept in the progress JSON and the audit entry; not secret)."""

    REVOKED = "revoked"  # Google answered 200
    ALREADY_REVOKED = "already_revoked"  # Google answered invalid_token for the refresh token
    GOOGLE_FAILED = "google_failed"  # transient past the budget, or an unexpected answer
    UNOPENABLE = "token_unopenable"  # the vault could not open the sealed token
    # The key provider stayed unreachable past the service's `key_outage_patience`.
    KEY_PROVIDER_DOWN = "key_provider_unavailable"
    NOTHING_STORED = "nothing_stored"  # no token stored to revoke
    # Only an access token was stored and Google did not know it: it may merely have expired.
    UNCONFIRMED = "unconfirmed"
    NOT_CONFIGURED = "google_not_configured"  # no OAuth client to revoke with

    @property
    def confirmed(self) -> bool:
        """Whether Google confirmed the token no longer grants access (see module doc)."""
        return self in (Revocation.REVOKED, Revocation.ALREADY_REVOKED)


@dataclass(frozen=True)
class DisconnectReceipt:
    """Proof of a completed disconnect, as stored and as answered (no token, no personal
    data). Rendering a stored receipt gives the same JSON every time."""

    integration_id: str
    revoked_at_google: bool
    tokens_destroyed: bool
    channels_stopped: int
    records_purged: int
    completed_at: datetime
    # The signed receipt (receipts.py); None only for disconnects completed before receipts
    # were signed, or by a service built without a signing key (some tests).
    signed: SignedReceipt | None = None

    def to_public(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "id": self.integration_id,
            "status": Status.DISCONNECTED.value,
            "revoked_at_google": self.revoked_at_google,
            "tokens_destroyed": self.tokens_destroyed,
            "channels_stopped": self.channels_stopped,
            "records_purged": self.records_purged,
            "completed_at": rfc3339(self.completed_at),
        }
        if self.signed is not None:
            document["receipt"] = self.signed.to_public()
        return document


@dataclass(frozen=True)
class _Progress:
    """What the steps so far found out; stored as JSON on the row after every step."""

    revocation: Revocation | None = None
    channels_stopped: int = 0
    records_purged: int = 0
    key_destroyed: bool | None = None
    # {"dek_id", "kek_id", "kek_version"} of the data key step 5 destroys (noted by step 4).
    data_key: dict[str, Any] | None = None

    def to_json(self, **final: object) -> str:
        data: dict[str, object] = {
            "revocation": self.revocation.value if self.revocation else None,
            "revoked_at_google": bool(self.revocation and self.revocation.confirmed),
            "channels_stopped": self.channels_stopped,
            "records_purged": self.records_purged,
            "key_destroyed": self.key_destroyed,
            "data_key": self.data_key,
        }
        data.update(final)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> _Progress:
        if not text:
            return cls()
        data = json.loads(text)
        revocation = data.get("revocation")
        return cls(
            revocation=Revocation(revocation) if revocation else None,
            channels_stopped=int(data.get("channels_stopped") or 0),
            records_purged=int(data.get("records_purged") or 0),
            key_destroyed=data.get("key_destroyed"),
            data_key=data.get("data_key"),
        )


def receipt_from_json(integration_id: str, text: str | None) -> DisconnectReceipt | None:
    """The receipt stored by step 6, or None if the JSON is only progress so far."""
    if not text:
        return None
    data = json.loads(text)
    completed_at = data.get("completed_at")
    if not isinstance(completed_at, str):
        return None
    return DisconnectReceipt(
        integration_id=integration_id,
        revoked_at_google=bool(data["revoked_at_google"]),
        tokens_destroyed=bool(data["tokens_destroyed"]),
        channels_stopped=int(data["channels_stopped"]),
        records_purged=int(data["records_purged"]),
        completed_at=datetime.fromisoformat(completed_at),
    )


@dataclass(frozen=True)
class DisconnectOutcome:
    """What a disconnect request got: the receipt, or (still running elsewhere, or a step
    failed and will be retried in the background) the step reached so far."""

    integration_id: str
    receipt: DisconnectReceipt | None
    step: int

    def to_public(self) -> dict[str, Any]:
        if self.receipt is not None:
            return self.receipt.to_public()
        return {
            "id": self.integration_id,
            "status": Status.DISCONNECTING.value,
            "disconnect_step": self.step,
        }


class KeyProviderUnavailable(Exception):
    """The revocation step waits for the key provider (see `_wait_for_key_provider`)."""

    def __init__(self, integration_id: str) -> None:
        super().__init__(f"integration {integration_id}: key provider unreachable, will retry")


class LeaseLost(Exception):
    """Another process took the job over (our lease expired while we were stalled)."""


class DisconnectService:
    """Requests, runs and resumes disconnects. One per process; safe to share across tasks.

    `owner` names this process in the lease column (at most 48 characters: each run appends
    `/<n>` so two runs in one process exclude each other too). `lease_ttl_s` must exceed the
    longest step, which is the revocation: keep it well above the retry policy's budget.
    """

    def __init__(
        self,
        *,
        repository: IntegrationRepository,
        vault: Vault,
        audit: AuditLog,
        revoker: TokenRevoker | None,
        retry: RetryPolicy,
        tokens: TokenManager | None = None,
        owner: str,
        hooks: DisconnectHooks | None = None,
        clock: Clock = utc_now,
        lease_ttl_s: float = 60.0,
        key_outage_patience: timedelta = timedelta(hours=24),
        step_hook: StepHook | None = None,
        signing: ReceiptSigning | None = None,
        receipts: ReceiptStore | None = None,
        journal: DeletionJournal | None = None,
        rng: Callable[[int], bytes] = os.urandom,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if len(owner) > 48:
            raise ValueError("owner must be at most 48 characters")
        if lease_ttl_s <= 0:
            raise ValueError("lease_ttl_s must be positive")
        self._repo = repository
        self._vault = vault
        self._audit = audit
        self._revoker = revoker
        self._tokens = tokens
        self._retry = retry
        self._owner = owner
        self._hooks = hooks if hooks is not None else DisconnectHooks()
        self._clock = clock
        self._lease_ttl = timedelta(seconds=lease_ttl_s)
        self._key_outage_patience = key_outage_patience
        self._step_hook = step_hook
        self._signing = signing
        self._receipts = receipts
        self._journal = journal
        self._rng = rng
        self._monotonic = monotonic
        self._sleep = sleep
        self._runs = itertools.count(1)

    def __repr__(self) -> str:
        return f"DisconnectService(owner={self._owner!r})"

    # -- entry points --------------------------------------------------------------------------

    async def disconnect(
        self,
        tenant_id: str,
        integration_id: str,
        *,
        wait_s: float = 0.0,
        poll_s: float = 0.2,
        request_id: str | None = None,
    ) -> DisconnectOutcome | None:
        """Request the disconnect of the tenant's integration and drive it to completion if
        this process can take the job's lease; if another holds it, wait up to `wait_s` for
        it to finish. None if the tenant has no such integration (another tenant's included).

        Idempotent: a completed disconnect returns its stored receipt again.
        """
        integration = await self._repo.get(tenant_id, integration_id)
        if integration is None:
            return None
        if integration.status is not Status.DISCONNECTED:
            if integration.status is not Status.DISCONNECTING:
                await self.request(tenant_id, integration_id, request_id=request_id)
            deadline = self._monotonic() + wait_s
            while True:
                try:
                    if await self.run(integration_id) is not None:
                        break
                except Exception:
                    # The job is durable: the background resumer retries it later.
                    log.exception("disconnect integration=%s: a step failed", integration_id)
                    break
                # Another run holds the lease: wait for it to finish (or to give up the lease).
                job = await self._repo.disconnect_job(integration_id)
                if job is None or job[0].status is not Status.DISCONNECTING:
                    break
                if self._monotonic() >= deadline:
                    break
                await self._sleep(poll_s)
        found = await self._repo.disconnect_job(integration_id)
        if found is None:
            return None
        current, progress_json = found
        receipt = None
        if current.status is Status.DISCONNECTED:
            receipt = receipt_from_json(integration_id, progress_json)
            if receipt is not None and self._receipts is not None:
                signed = await self._receipts.for_integration(tenant_id, integration_id)
                receipt = replace(receipt, signed=signed)
        return DisconnectOutcome(
            integration_id=integration_id, receipt=receipt, step=current.disconnect_step
        )

    async def request(
        self, tenant_id: str, integration_id: str, *, request_id: str | None = None
    ) -> bool:
        """Step 1: mark the integration `disconnecting`. False if it was already requested
        (or is not the tenant's)."""
        marked = await self._repo.mark_disconnecting(tenant_id, integration_id, self._clock())
        if marked:
            log.info("disconnect integration=%s step=1 requested", integration_id)
            await self._audit.record(
                "disconnect_requested",
                "ok",
                tenant_id=tenant_id,
                integration_id=integration_id,
                request_id=request_id,
            )
            self._completed(1)
        return marked

    async def run(self, integration_id: str) -> DisconnectReceipt | None:
        """Take the job's lease and run the remaining steps. None when the lease is held by
        another run (or the integration is not `disconnecting`). A failing step raises after
        the lease is released; its completed predecessors stay done."""
        owner = f"{self._owner}/{next(self._runs)}"
        now = self._clock()
        if not await self._repo.acquire_disconnect_lease(
            integration_id, owner, now, now + self._lease_ttl
        ):
            return None
        finished = False
        try:
            found = await self._repo.disconnect_job(integration_id)
            if found is None or found[0].status is not Status.DISCONNECTING:
                return None
            integration, progress_json = found
            progress = _Progress.from_json(progress_json)
            for step in range(integration.disconnect_step + 1, LAST_STEP + 1):
                if step == LAST_STEP:
                    receipt = await self._finish(integration, owner, progress)
                    finished = True
                    self._completed(step)
                    return receipt
                progress = await self._step(step, integration, owner, progress)
                self._completed(step)
            return None  # unreachable: the loop always ends with LAST_STEP
        except LeaseLost:
            log.warning(
                "disconnect integration=%s: lease lost, another run continues", integration_id
            )
            return None
        finally:
            if not finished:
                await self._repo.release_disconnect_lease(integration_id, owner)

    async def resume_all(self) -> int:
        """Run every unfinished disconnect whose lease is free or expired (on startup and
        periodically). Returns how many this call completed; failures are logged and left
        for the next call."""
        completed = 0
        for integration_id in await self._repo.disconnecting_ids():
            try:
                if await self.run(integration_id) is not None:
                    completed += 1
            except Exception:
                log.exception("disconnect integration=%s: resume failed", integration_id)
        return completed

    # -- the steps -----------------------------------------------------------------------------

    def _completed(self, step: int) -> None:
        if self._step_hook is not None:
            self._step_hook(step)

    async def _step(
        self, step: int, integration: Integration, owner: str, progress: _Progress
    ) -> _Progress:
        clear_tokens = False
        if step == 2:
            tokens: TokenSource = (
                self._tokens.disconnect_source(integration.id)
                if self._tokens is not None
                else _NoGrant()
            )
            stopped = 0
            for stopper in list(self._hooks.channel_stoppers):
                stopped += int(await stopper(integration, tokens))
            progress = replace(progress, channels_stopped=stopped)
        elif step == 3:
            progress = replace(progress, revocation=await self._revoke(integration))
        elif step == 4:
            key = await self._vault.key_info(integration.tenant_id, integration.id)
            if key is not None:
                data_key = {
                    "dek_id": key.dek_id,
                    "kek_id": key.kek_id,
                    "kek_version": key.kek_version,
                }
                progress = replace(progress, data_key=data_key)
            purged = await _run_hooks(self._hooks.record_purgers, integration)
            progress = replace(progress, records_purged=purged)
            clear_tokens = True
        elif step == 5:
            destroyed = await self._vault.destroy(integration.tenant_id, integration.id)
            # A resume after a crash between destroy and this write finds no key: it was
            # destroyed by the earlier attempt, so the flag keeps its first value.
            key_destroyed = destroyed.destroyed or bool(progress.key_destroyed)
            progress = replace(progress, key_destroyed=key_destroyed)
        else:
            raise ValueError(f"no disconnect step {step}")
        now = self._clock()
        if not await self._repo.advance_disconnect(
            integration.id,
            owner,
            step,
            progress.to_json(),
            now=now,
            lease_until=now + self._lease_ttl,
            clear_tokens=clear_tokens,
        ):
            raise LeaseLost
        # Deleted token blobs and the key row must not survive in SQLite's WAL file.
        if step in (4, 5) and not await self._repo.checkpoint_wal():
            log.warning("disconnect integration=%s: WAL checkpoint was busy", integration.id)
        log.info("disconnect integration=%s step=%d done", integration.id, step)
        return progress

    async def _revoke(self, integration: Integration) -> Revocation:
        """Step 3. Never raises for Google or the vault: the disconnect goes on regardless."""
        if self._revoker is None:
            return Revocation.NOT_CONFIGURED
        revoker = self._revoker
        sealed = await self._repo.sealed_tokens(integration.id)
        if sealed is None or sealed.refresh_token is None:
            # Without the refresh token nothing proves the grant dead: an access token's
            # invalid_token may only mean that the access token expired.
            access_blob = sealed.access_token if sealed is not None else None
            return await self._revoke_access_token(integration, access_blob)
        try:
            token = await self._open(integration, PURPOSE_REFRESH_TOKEN, sealed.refresh_token)
        except (KekProviderError, KeyringError):
            return self._wait_for_key_provider(integration)
        except VaultError as exc:
            log.warning(
                "disconnect integration=%s: refresh token unopenable (%s)",
                integration.id,
                getattr(exc, "reason", type(exc).__name__),
            )
            return Revocation.UNOPENABLE
        try:
            revoked = await self._retry.run(lambda: revoker.revoke(token))
        except GoogleError as exc:
            log.warning("disconnect integration=%s: revocation failed: %s", integration.id, exc)
            return Revocation.GOOGLE_FAILED
        return Revocation.REVOKED if revoked else Revocation.ALREADY_REVOKED

    async def _revoke_access_token(
        self, integration: Integration, blob: bytes | None
    ) -> Revocation:
        """Fallback without a refresh token: revoking an access token revokes its grant too,
        but only a 200 is proof (see `_revoke`)."""
        if blob is None or self._revoker is None:
            return Revocation.NOTHING_STORED
        revoker = self._revoker
        try:
            token = await self._open(integration, PURPOSE_ACCESS_TOKEN, blob)
        except (KekProviderError, KeyringError):
            return self._wait_for_key_provider(integration)
        except VaultError:
            return Revocation.UNOPENABLE
        try:
            revoked = await self._retry.run(lambda: revoker.revoke(token))
        except GoogleError as exc:
            log.warning("disconnect integration=%s: revocation failed: %s", integration.id, exc)
            return Revocation.GOOGLE_FAILED
        return Revocation.REVOKED if revoked else Revocation.UNCONFIRMED

    def _wait_for_key_provider(self, integration: Integration) -> Revocation:
        """The key provider is down, so the token cannot be opened to revoke it. Destroying it
        now would leave the grant alive at Google for good: the step fails instead (the job is
        durable and retried) until the outage has lasted `key_outage_patience` since the
        request, after which the disconnect completes without revoking, as the user asked."""
        requested = integration.disconnect_requested_at
        if requested is not None and self._clock() - requested < self._key_outage_patience:
            raise KeyProviderUnavailable(integration.id)
        log.warning(
            "disconnect integration=%s: key provider still unreachable, not revoked at Google",
            integration.id,
        )
        return Revocation.KEY_PROVIDER_DOWN

    async def _open(self, integration: Integration, purpose: str, blob: bytes) -> str:
        return await open_token(self._vault, integration.tenant_id, integration.id, purpose, blob)

    async def _finish(
        self, integration: Integration, owner: str, progress: _Progress
    ) -> DisconnectReceipt:
        """Step 6: the journal entry, then the receipt and the audit entry in one transaction."""
        now = self._clock()
        journal_seq = None
        if self._journal is not None:
            # Outside the database, before the job can complete (a failure here fails the step,
            # which is retried): a restored backup must not bring this integration back
            # (reshred.py). Only now, with nothing left to shred, so the replay never races
            # this job. A retried step appends it twice: harmless.
            journal_seq = await self._journal.append(integration.tenant_id, integration.id, now)
        receipt = DisconnectReceipt(
            integration_id=integration.id,
            revoked_at_google=bool(progress.revocation and progress.revocation.confirmed),
            # Step 4 deleted the blobs and step 5 destroyed the key that sealed them (or found
            # it already destroyed): we only get here once both are done.
            tokens_destroyed=True,
            channels_stopped=progress.channels_stopped,
            records_purged=progress.records_purged,
            completed_at=now,
        )
        signed = None
        if self._signing is not None:
            signed = sign_receipt(
                {
                    "receipt_id": "rcp_" + self._rng(12).hex(),
                    "tenant_id": integration.tenant_id,
                    "integration_id": integration.id,
                    "requested_at": rfc3339(integration.disconnect_requested_at or now),
                    "completed_at": rfc3339(now),
                    "revocation": progress.revocation.value if progress.revocation else None,
                    "revoked_at_google": receipt.revoked_at_google,
                    "tokens_destroyed": receipt.tokens_destroyed,
                    "channels_stopped": receipt.channels_stopped,
                    "records_purged": receipt.records_purged,
                    "data_key": progress.data_key,
                },
                await self._signing.signer(),
            )
            receipt = replace(receipt, signed=signed)
        receipt_json = progress.to_json(
            tokens_destroyed=receipt.tokens_destroyed,
            completed_at=rfc3339(now),
            receipt_id=signed.receipt_id if signed is not None else None,
        )
        async with self._repo.engine.begin() as conn:
            if not await self._repo.complete_disconnect(
                integration.id, owner, LAST_STEP, receipt_json, now=now, conn=conn
            ):
                raise LeaseLost
            if signed is not None and self._receipts is not None:
                await self._receipts.insert(
                    integration.tenant_id,
                    integration.id,
                    signed,
                    now,
                    journal_seq=journal_seq,
                    conn=conn,
                )
            await self._audit.record(
                "disconnect",
                "ok" if receipt.revoked_at_google else "not_revoked_at_google",
                tenant_id=integration.tenant_id,
                integration_id=integration.id,
                detail={
                    "revocation": progress.revocation.value if progress.revocation else None,
                    "revoked_at_google": receipt.revoked_at_google,
                    "tokens_destroyed": receipt.tokens_destroyed,
                    "key_destroyed": progress.key_destroyed,
                    "channels_stopped": receipt.channels_stopped,
                    "records_purged": receipt.records_purged,
                },
                conn=conn,
            )
        log.info(
            "disconnect integration=%s completed revocation=%s",
            integration.id,
            progress.revocation.value if progress.revocation else None,
        )
        return receipt


class _NoGrant:
    """Step 2's `TokenSource` when no Google client is configured: no token can be had (and
    without one nobody could have connected, so no channel is open at Google)."""

    async def access_token(self) -> str:
        raise IntegrationInactive(Status.DISCONNECTING)

    async def refreshed_token(self, stale: str) -> str:
        raise IntegrationInactive(Status.DISCONNECTING)


async def _run_hooks(hooks: list[IntegrationHook], integration: Integration) -> int:
    total = 0
    for hook in list(hooks):
        total += int(await hook(integration))
    return total
