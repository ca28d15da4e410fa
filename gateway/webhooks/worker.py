"""The delivery worker: claims due deliveries with a lease, signs and POSTs them, records the
outcome.

    2xx                       delivered
    410 Gone                  failed, and the endpoint disabled (reason `gone`)
    anything else, a timeout, a refused or unreachable address
                              retried on the schedule (model.RetrySchedule: first retry within
                              10 s, backoff with jitter, honouring Retry-After) until the event
                              is 3 days old, then failed; an endpoint whose every attempt failed
                              for 5 days is disabled (reason `failing`)

Redirects are not followed (a 3xx is a failure: the endpoint URL should be updated). At most
1 KiB of an answer's body is read and kept. Each attempt resolves the host again, checks every
address (destinations.py) and connects only to a checked one.

Deliveries are claimed in batches (`batch`, one transaction) and sent concurrently; the
batch's verdicts are saved together, in one transaction, when its last attempt has ended. The
lease is taken before the request and released with the verdict; a process killed in between
(mid-request, or with verdicts not yet saved) leaves the leases to expire (`lease_s`) and
another process sends those deliveries again with the same `webhook-id`: at least once, never
lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import aiohttp

from gateway.clock import utc_now
from gateway.errors import GatewayError
from gateway.webhooks.destinations import (
    DestinationPolicy,
    IPAddress,
    PinnedResolver,
    Resolve,
    check_url,
    checked_addresses,
)
from gateway.webhooks.errors import DestinationRefused
from gateway.webhooks.model import DeliveryState, DisabledReason, RetrySchedule
from gateway.webhooks.service import EndpointService
from gateway.webhooks.signing import signed_headers
from gateway.webhooks.store import Claimed, Outcome, WebhookStore

log = logging.getLogger(__name__)

MAX_KEPT_RESPONSE_BYTES = 1024


@dataclass(frozen=True)
class WorkerConfig:
    tick_s: float = 0.5
    lease_s: float = 60.0
    batch: int = 32
    timeout_s: float = 15.0
    schedule: RetrySchedule = field(default_factory=RetrySchedule)

    def __post_init__(self) -> None:
        if self.lease_s <= self.timeout_s:
            raise ValueError("lease_s must exceed timeout_s (a delivery must end inside its lease)")


@dataclass(frozen=True)
class Attempt:
    """What one attempt gave: an HTTP status, or an error code."""

    status: int | None
    error: str | None
    latency_ms: int
    response: str | None = None
    retry_after_s: float | None = None


class DeliveryWorker:
    def __init__(
        self,
        store: WebhookStore,
        endpoints: EndpointService,
        policy: DestinationPolicy,
        resolve: Resolve,
        *,
        owner: str,
        config: WorkerConfig = WorkerConfig(),
        clock: Callable[[], datetime] = utc_now,
        rng: Callable[[], float] = random.random,
        before_save: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`before_save` is awaited between a batch's last attempt and the saving of its
        outcomes (a test stops the worker there, as a crash would)."""
        self._store = store
        self._endpoints = endpoints
        self._policy = policy
        self._resolve = resolve
        self._owner = owner
        self.config = config
        self._clock = clock
        self._rng = rng
        self._before_save = before_save
        self._wake = asyncio.Event()
        self._sessions: dict[tuple[str, str, int, tuple[str, ...]], aiohttp.ClientSession] = {}

    def wake(self) -> None:
        """Look for due deliveries now instead of at the next tick."""
        self._wake.set()

    async def run_once(self) -> int:
        """Claim and deliver one batch; returns how many deliveries were attempted.

        The batch's outcomes are saved together once its last attempt ends (one transaction
        for the batch): until then every delivery of it stays leased, so a process killed
        before the save loses nothing, its deliveries are sent again after the lease."""
        now = self._clock()
        claimed = await self._store.claim_due(
            self._owner,
            now,
            lease_until=now + timedelta(seconds=self.config.lease_s),
            limit=self.config.batch,
        )
        if not claimed:
            return 0
        ended: list[tuple[Claimed, Attempt]] = []

        async def deliver(one: Claimed) -> None:
            ended.append((one, await self._attempt_safely(one)))

        await asyncio.gather(*(deliver(c) for c in claimed))
        if self._before_save is not None:
            await self._before_save()
        await self._record(ended)
        return len(claimed)

    def _session_for(
        self, scheme: str, host: str, port: int, addresses: list[IPAddress]
    ) -> aiohttp.ClientSession:
        """A client session whose connections go only to `addresses` (just checked) of
        `host`: kept while the host resolves to the same addresses, so deliveries to one
        endpoint reuse their connections; a changed answer gets a new pinned session."""
        key = (scheme, host, port, tuple(sorted(str(a) for a in addresses)))
        session = self._sessions.get(key)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                resolver=PinnedResolver(host, addresses),
                use_dns_cache=False,
                limit_per_host=self.config.batch,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
            )
            self._sessions[key] = session
        return session

    async def close(self) -> None:
        """Close the pooled connections (the app's shutdown)."""
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()

    async def run_forever(self) -> None:
        while True:
            # Cleared before the round, not after: a wake during the round (deliveries
            # committed meanwhile) starts the next round at once instead of being lost.
            self._wake.clear()
            try:
                busy = await self.run_once() >= self.config.batch
            except Exception:  # the database may be briefly unreachable; next tick retries
                log.exception("webhook delivery round failed")
                busy = False
            if busy:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.tick_s)

    async def _attempt_safely(self, claimed: Claimed) -> Attempt:
        try:
            return await self._attempt(claimed)
        except Exception as exc:  # never leave a delivery claimed because of a bug of ours
            log.exception("webhook delivery %s failed unexpectedly", claimed.id)
            code = exc.code if isinstance(exc, GatewayError) else "internal_error"
            return Attempt(status=None, error=code, latency_ms=0)

    async def _attempt(self, claimed: Claimed) -> Attempt:
        endpoint = claimed.endpoint
        now = self._clock()
        body = claimed.body.encode("utf-8")
        started = time.monotonic()
        try:
            target = check_url(endpoint.url, self._policy)
            addresses = await checked_addresses(target, self._policy, self._resolve)
        except DestinationRefused as exc:
            return Attempt(status=None, error=exc.code, latency_ms=0)
        except GatewayError:  # the URL no longer passes (e.g. insecure loopback turned off)
            return Attempt(status=None, error="insecure_url", latency_ms=0)
        secrets = await self._endpoints.signing_secrets(endpoint, now)
        headers = signed_headers(secrets, claimed.event_id, int(now.timestamp()), body)
        headers["content-type"] = "application/json"
        session = self._session_for(target.scheme, target.host, target.port, addresses)
        try:
            async with session.post(
                endpoint.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                kept = await response.content.read(MAX_KEPT_RESPONSE_BYTES)
                return Attempt(
                    status=response.status,
                    error=None,
                    latency_ms=int((time.monotonic() - started) * 1000),
                    response=kept.decode("utf-8", "replace") or None,
                    retry_after_s=_retry_after(response.headers.get("Retry-After")),
                )
        except TimeoutError:
            error = "timeout"
        except aiohttp.ClientError:
            error = "connection_failed"
        return Attempt(
            status=None, error=error, latency_ms=int((time.monotonic() - started) * 1000)
        )

    def _outcome(self, claimed: Claimed, attempt: Attempt, now: datetime) -> Outcome:
        schedule = self.config.schedule
        ok = attempt.status is not None and 200 <= attempt.status < 300
        disable: DisabledReason | None = None
        next_at: datetime | None = None
        if ok:
            state = DeliveryState.DELIVERED
        elif attempt.status == 410:
            state, disable = DeliveryState.FAILED, DisabledReason.GONE
        else:
            next_at = schedule.next_attempt(
                attempts=claimed.attempts + 1,
                created_at=claimed.event_created_at,
                now=now,
                rng=self._rng,
                retry_after_s=attempt.retry_after_s,
            )
            state = DeliveryState.PENDING if next_at is not None else DeliveryState.FAILED
            failing_since = claimed.endpoint.failing_since or now
            if schedule.should_disable(failing_since, now):
                disable = DisabledReason.FAILING
        return Outcome(
            delivery_id=claimed.id,
            endpoint_id=claimed.endpoint.id,
            state=state,
            next_attempt_at=next_at,
            status=attempt.status,
            error=attempt.error,
            latency_ms=attempt.latency_ms,
            response=attempt.response,
            endpoint_failed=not ok,
            disable=disable,
        )

    async def _record(self, ended: list[tuple[Claimed, Attempt]]) -> None:
        now = self._clock()
        outcomes = [self._outcome(c, a, now) for c, a in ended]
        saved = await self._store.finish_many(self._owner, now, outcomes)
        for outcome in outcomes:
            if outcome.delivery_id not in saved:
                log.warning(
                    "webhook delivery %s: lease lost before its outcome was saved",
                    outcome.delivery_id,
                )
            elif outcome.disable is not None:
                log.warning(
                    "webhook endpoint %s disabled (%s)",
                    outcome.endpoint_id,
                    outcome.disable.value,
                )


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
