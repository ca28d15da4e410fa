"""The sync scheduler: decides WHEN each calendar is synced, shared by every gateway process.

    scheduler = SyncScheduler(engine=sync_engine, config=SchedulerConfig())
    await scheduler.start()          # background loop (one per process)
    scheduler.nudge(calendar_id)     # a sync was requested: look now, not at the next tick
    await scheduler.stop()           # finishes or hands back its calendars

Each tick (every `tick_s`, or at once when nudged or when a sync finishes):

1. discovery: active integrations without calendar rows (just connected) get
   `engine.ensure_calendars()`, `concurrency` at a time; their first full sync is then due at
   once. A full batch makes the next turn of the loop look again (a burst of connections).
   Each is claimed first (`LeaseStore.claim_discovery`), so one process asks Google for it,
   not every process that looked; a failed discovery's backoff holds for every process;
2. claiming: due calendars (see `LeaseStore.claim_due`) are leased to this process, as many as
   free slots (`concurrency`), one per Google account. Claiming clears `sync_requested_at`,
   so many requests before a claim make one sync, and a request during a sync one more after;
3. each claimed calendar is synced by the engine in its own task (after the `before_sync`
   hooks: push wiring opens a new calendar's first channel there), while a heartbeat renews
   the lease every third of `lease_s`. A process that dies stops renewing: its leases run out
   and another process claims the calendars. A heartbeat that finds the lease gone (this
   process stalled past it) cancels its sync, so two processes never write one calendar;
4. afterwards: success plans the next poll (`poll_interval_s`, or `safety_poll_interval_s`
   with a live push channel) and re-expands busy blocks whose horizon drifted by more than a
   day; a transient failure (rate limit, 5xx, timeout) backs off exponentially with full
   jitter (`backoff_s`, at least Google's Retry-After), any other failure waits the longest
   backoff. A calendar of an integration that is not active is never synced;
5. then the `after_sync` hooks run with the calendar and its outcome (push wiring opens the
   first watch channel there, right after the first full sync committed).

Nothing here calls Google itself; time (`clock`) and randomness (`rng`) are injectable.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import random
import secrets
import socket
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError

from gateway.clock import utc_now
from gateway.connections.errors import IntegrationInactive
from gateway.errors import NotFound
from gateway.google.errors import GoogleError, TransientGoogleError
from gateway.sync.calendar_store import CalendarRow
from gateway.sync.config import SchedulerConfig
from gateway.sync.engine import SyncEngine, SyncOutcome
from gateway.sync.lease_store import ClaimOffer, LeaseRelease
from gateway.sync.store import SyncStore

log = logging.getLogger(__name__)

# A horizon that moved by more than this is re-expanded from the stored records.
HORIZON_DRIFT = timedelta(days=1)
# How long `stop()` lets running syncs finish before cancelling them.
STOP_GRACE_S = 5.0

AfterSync = Callable[[CalendarRow, SyncOutcome], Awaitable[None]]
"""Called after a successful sync has been settled (in the calendar's task; failures logged)."""
BeforeSync = Callable[[CalendarRow], Awaitable[None]]
"""Called before a claimed calendar's sync starts, under its lease (failures logged)."""


def default_owner() -> str:
    """A lease owner id unique to this process: host, pid and a random suffix (a restarted
    process with a recycled pid is still someone else). At most 64 characters."""
    return f"{socket.gethostname()[:36]}:{os.getpid()}:{secrets.token_hex(4)}"


class SyncScheduler:
    """One per gateway process (see the module doc)."""

    def __init__(
        self,
        *,
        engine: SyncEngine,
        config: SchedulerConfig | None = None,
        owner: str | None = None,
        clock: Callable[[], datetime] = utc_now,
        rng: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.engine = engine
        self._store: SyncStore = engine.store
        self.config = config or SchedulerConfig()
        self.owner = owner or default_owner()
        if len(self.owner) > 64:
            raise ValueError("a lease owner id has at most 64 characters")
        self._clock = clock
        self._rng = rng
        # Between lease renewals (tests step the heartbeat with it).
        self._sleep = sleep
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._stopping = False
        # calendar id -> its sync task; integration ids with a sync running here.
        self._running: dict[str, asyncio.Task[None]] = {}
        # Calendars whose sync released its lease in its last transaction (LeaseRelease): the
        # heartbeat stops renewing instead of reporting the lease lost.
        self._released: set[str] = set()
        # Slots offered to push notifications (`offer`) and not yet taken or declined.
        self._offered = 0
        self._busy: set[str] = set()
        # Integrations whose calendars this scheduler is discovering now.
        self._discovering: set[str] = set()
        self.before_sync: list[BeforeSync] = []
        self.after_sync: list[AfterSync] = []
        # Whether the loop's next tick looks for new integrations even if it looked less than
        # tick_s ago (a nudge without a calendar); sync requests and finished syncs do not.
        self._discovery_due = False

    def __repr__(self) -> str:
        return f"SyncScheduler(owner={self.owner!r}, running={len(self._running)})"

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background loop (inside the running event loop)."""
        if self._loop is None:
            self._stopping = False
            self._loop = asyncio.create_task(self._run(), name=f"sync-scheduler {self.owner}")

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop claiming; let running syncs finish for `grace_s`, cancel the rest and hand
        their calendars back (lease released, sync re-requested) for another process."""
        if self._loop is not None:
            # Let a tick in progress finish (a claim cut short would leave leases behind until
            # they run out); a tick stuck on Google is cancelled after the grace period.
            self._stopping = True
            self._wake.set()
            done, _ = await asyncio.wait({self._loop}, timeout=grace_s)
            if not done:
                self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None
        tasks = list(self._running.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def nudge(self, calendar_id: str | None = None) -> None:
        """Look for due work now (a sync was requested, e.g. by a push notification; the
        request itself is durable in `calendars.sync_requested_at`). A nudge for a known
        calendar claims at once without looking for new integrations first (one query less
        on the push-to-visible path); discovery keeps its tick."""
        if calendar_id is None:
            self._discovery_due = True
        self._wake.set()

    # -- push notifications claim directly ---------------------------------------------------

    def offer(self) -> ClaimOffer | None:
        """A free sync slot for a push notification's transaction to lease its calendar with
        (gateway.sync.channel_store: the sync starts at once, without the request, the wake
        and the claim's own transaction); None when every slot is taken or this scheduler
        stops. The caller must `take` or `decline` it."""
        if self._stopping or self._loop is None:
            return None
        if self.config.concurrency - len(self._running) - self._offered <= 0:
            return None
        self._offered += 1
        lease_until = self._clock() + timedelta(seconds=self.config.lease_s)
        return ClaimOffer(self.owner, lease_until, frozenset(self._busy))

    async def take(self, offer: ClaimOffer, calendar: CalendarRow) -> None:
        """Start the sync of `calendar`, leased to this scheduler with `offer` (handed back,
        its request restored, if this scheduler is stopping meanwhile)."""
        self._offered -= 1
        if self._stopping:
            await self._store.release(calendar.id, self.owner, self._clock(), again=True)
            return
        self._start(calendar)

    def decline(self, offer: ClaimOffer) -> None:
        """The offer was not used (the calendar could not be claimed, or the notification
        failed): the slot is free again."""
        self._offered -= 1
        self._wake.set()

    @property
    def running(self) -> frozenset[str]:
        """Calendars this process is syncing right now."""
        return frozenset(self._running)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        discovered_at = -math.inf
        while not self._stopping:
            self._wake.clear()
            # Every tick_s at least, even while finishing syncs keep waking the loop.
            discover = self._discovery_due or loop.time() - discovered_at >= self.config.tick_s
            if discover:
                self._discovery_due = False
                discovered_at = loop.time()
            try:
                await self.tick(discover=discover)
            except Exception:
                # The database may be away for a moment: try again at the next tick.
                log.exception("sync scheduler tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.tick_s)

    # -- one tick ---------------------------------------------------------------------------

    async def tick(self, *, discover: bool = True) -> list[str]:
        """Discover new integrations' calendars (unless `discover` is false), claim due
        calendars for the free slots and start their syncs; returns the ids claimed (tests
        drive the scheduler with it)."""
        if discover:
            await self._discover()
        free = self.config.concurrency - len(self._running) - self._offered
        if free <= 0:
            return []
        now = self._clock()
        claimed = await self._store.claim_due(
            self.owner,
            now,
            lease_until=now + timedelta(seconds=self.config.lease_s),
            limit=free,
            busy_integrations=self._busy,
        )
        for calendar in claimed:
            self._start(calendar)
        return [c.id for c in claimed]

    def _start(self, calendar: CalendarRow) -> None:
        """Run the sync of a calendar leased to this scheduler, in a task of its own."""
        self._busy.add(calendar.integration_id)
        task = asyncio.create_task(self._work(calendar), name=f"sync {calendar.id}")
        self._running[calendar.id] = task
        task.add_done_callback(functools.partial(self._finished, calendar))

    async def drain(self) -> None:
        """Wait until every sync started here has finished."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def run_once(self) -> list[str]:
        """One tick and the syncs it started, to the end."""
        claimed = await self.tick()
        await self.drain()
        return claimed

    def _finished(self, calendar: CalendarRow, _task: asyncio.Task[None]) -> None:
        self._running.pop(calendar.id, None)
        self._busy.discard(calendar.integration_id)
        # A slot is free, and a request may have come in during the sync.
        self._wake.set()

    # -- discovery --------------------------------------------------------------------------

    async def _discover(self) -> None:
        now = self._clock()
        # Claimed for as long as a sync's lease: a process that dies mid-discovery leaves the
        # integration to another one then.
        todo = await self._store.claim_discovery(
            now,
            until=now + timedelta(seconds=self.config.lease_s),
            limit=self.config.concurrency,
            skip=self._discovering,
        )
        if todo:
            await asyncio.gather(*(self._discover_one(i) for i in todo))
        if len(todo) == self.config.concurrency:
            # A full batch: more may be waiting (many connected at once). Look again at the
            # next turn of the loop rather than a tick later, or a burst of new integrations
            # would be discovered `concurrency` a second while slots stand idle.
            self._discovery_due = True

    async def _discover_one(self, integration_id: str) -> None:
        self._discovering.add(integration_id)
        retry_s: float | None = None
        try:
            rows = await self.engine.ensure_calendars(integration_id)
            if rows:
                self._wake.set()
                log.info("calendars discovered: integration=%s count=%d", integration_id, len(rows))
            else:
                retry_s = self.config.poll_interval_s
        except IntegrityError:
            pass  # another process created the row at the same moment: it exists now
        except NotFound:
            pass  # deleted meanwhile
        except TransientGoogleError as exc:
            retry_s = self.config.backoff_s(1, self._rng(), exc.retry_after_s)
            log.warning("calendar discovery failed: integration=%s error=%s", integration_id, exc)
        except IntegrationInactive:
            pass  # the grant died meanwhile: no longer active, no longer discovered
        except GoogleError as exc:
            retry_s = self.config.backoff_max_s
            log.warning("calendar discovery failed: integration=%s error=%s", integration_id, exc)
        except Exception as exc:
            # One integration's trouble (the database, a bug) must not stop the others'.
            retry_s = self.config.backoff_max_s
            log.error(
                "calendar discovery crashed: integration=%s error=%s",
                integration_id,
                type(exc).__name__,
            )
        finally:
            self._discovering.discard(integration_id)
        if retry_s is not None:
            until = self._clock() + timedelta(seconds=retry_s)
            try:
                # For every process: the backoff is the integration's, not this process's.
                await self._store.defer_discovery(integration_id, until)
            except Exception:
                # The claim runs out by itself (lease_s): discovery is tried again then.
                log.exception("discovery backoff not stored: integration=%s", integration_id)

    # -- one calendar -----------------------------------------------------------------------

    async def _work(self, calendar: CalendarRow) -> None:
        try:
            outcome = await self._sync_and_settle(calendar)
        except Exception:
            # Settling failed (the database): the lease runs out and the calendar is retried.
            log.exception("calendar sync bookkeeping failed: calendar=%s", calendar.id)
            return
        if outcome is None or outcome.status != "synced":
            return
        for hook in self.after_sync:
            try:
                await hook(calendar, outcome)
            except Exception:
                log.exception("after-sync hook failed: calendar=%s", calendar.id)

    async def _sync_and_settle(self, calendar: CalendarRow) -> SyncOutcome | None:
        """Sync under the lease and record the verdict; None when the lease was lost."""
        try:
            return await self._sync_and_settle_once(calendar)
        finally:
            self._released.discard(calendar.id)

    def _release_for(self, calendar: CalendarRow) -> LeaseRelease | None:
        """How a successful sync of `calendar` releases its lease in its own last transaction;
        None when the release must wait for a re-expansion after it (`_settle`)."""
        if calendar.active_generation is not None and self._drifted(calendar, self._clock()):
            return None
        return LeaseRelease(
            self.owner,
            self.config.poll_interval_s,
            self.config.safety_poll_interval_s,
            on_released=functools.partial(self._released.add, calendar.id),
        )

    async def _sync(self, calendar: CalendarRow) -> SyncOutcome:
        """The `before_sync` hooks, then the engine's sync of the claimed calendar."""
        for hook in self.before_sync:
            try:
                await hook(calendar)
            except Exception:
                log.exception("before-sync hook failed: calendar=%s", calendar.id)
        return await self.engine.sync_calendar(
            calendar.id, claimed=calendar, release=self._release_for(calendar)
        )

    async def _sync_and_settle_once(self, calendar: CalendarRow) -> SyncOutcome | None:
        sync = asyncio.create_task(self._sync(calendar))
        held = asyncio.create_task(self._hold_lease(calendar.id))
        try:
            await asyncio.wait({sync, held}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # stop(): hand the calendar back at once instead of waiting for the lease to run out.
            sync.cancel()
            held.cancel()
            await asyncio.gather(sync, held, return_exceptions=True)
            await self._store.release(calendar.id, self.owner, self._clock(), again=True)
            raise
        if not sync.done() and calendar.id in self._released:
            # The heartbeat found the lease gone because the sync's last transaction freed it:
            # the sync has committed everything and is returning.
            await asyncio.wait({sync})
        if not sync.done():
            sync.cancel()
            await asyncio.gather(sync, return_exceptions=True)
            log.warning("sync lease lost, sync abandoned: calendar=%s", calendar.id)
            return None
        held.cancel()
        await asyncio.gather(held, return_exceptions=True)
        try:
            outcome = sync.result()
        except Exception as exc:
            outcome = await self._unexpected(calendar, exc)
        await self._settle(calendar, outcome)
        return outcome

    async def _hold_lease(self, calendar_id: str) -> None:
        """Renew the lease every third of its length; return when it is lost."""
        lease = timedelta(seconds=self.config.lease_s)
        held_until = self._clock() + lease
        while True:
            await self._sleep(self.config.lease_s / 3)
            if calendar_id in self._released:
                continue  # nothing to renew: the sync is ending (cancelled with it)
            now = self._clock()
            try:
                if not await self._store.extend_lease(calendar_id, self.owner, now + lease):
                    if calendar_id in self._released:
                        continue  # freed by the sync's last transaction meanwhile
                    if await self._store.lease_owner(calendar_id) is None:
                        # Freed, not taken: only this sync's last transaction frees a lease
                        # it holds, and on PostgreSQL the renewal's answer can arrive before
                        # the sync has run that commit's `on_released`. Taking it for a loss
                        # would abandon a sync whose result is stored.
                        continue
                    return
                held_until = now + lease
            except Exception:
                log.exception("sync lease renewal failed: calendar=%s", calendar_id)
                if self._clock() >= held_until:
                    return

    async def _unexpected(self, calendar: CalendarRow, exc: Exception) -> SyncOutcome:
        """A failure the engine does not classify (the database, a bug): an error, retried
        after the longest backoff."""
        code = exc.code if isinstance(exc, GoogleError) else "internal_error"
        log.error("calendar sync crashed: calendar=%s error=%s", calendar.id, type(exc).__name__)
        with contextlib.suppress(Exception):
            await self._store.record_failure(
                calendar.id, state="error", error_code=code, now=self._clock()
            )
        return SyncOutcome(calendar.id, "failed", error=code)

    async def _settle(self, calendar: CalendarRow, outcome: SyncOutcome) -> None:
        now = self._clock()
        if outcome.status == "synced" and outcome.released:
            return  # stored and released in one transaction (`_release_for`)
        if outcome.status == "synced":
            if not outcome.full:  # a full sync has just expanded for today's horizon
                await self._reexpand_if_drifted(calendar, now)
            released = await self._store.release_synced(
                calendar.id,
                self.owner,
                now,
                poll_interval_s=self.config.poll_interval_s,
                safety_poll_interval_s=self.config.safety_poll_interval_s,
            )
        elif outcome.status == "failed":

            def delay_s(state: str, attempts: int) -> float:
                if state == "backoff":
                    return self.config.backoff_s(attempts, self._rng(), outcome.retry_after_s)
                return self.config.backoff_max_s

            until = await self._store.release_failed(calendar.id, self.owner, now, delay_s)
            released = until is not None
            if until is not None:
                log.info(
                    "calendar sync backs off: calendar=%s error=%s until=%s",
                    calendar.id,
                    outcome.error,
                    until.isoformat(),
                )
        else:  # inactive: never synced; the claim query skips it from now on
            released = await self._store.release(calendar.id, self.owner, now, again=False)
        if not released:
            log.warning("sync lease was lost before release: calendar=%s", calendar.id)

    async def _reexpand_if_drifted(self, calendar: CalendarRow, now: datetime) -> None:
        # The row as claimed: only a full sync or this re-expansion move the horizon, and
        # neither ran for it since (the lease), so no read is needed on every sync's path.
        if not self._drifted(calendar, now):
            return
        blocks = await self.engine.reexpand(calendar.id, self.engine.config.horizon(now))
        log.info("busy blocks re-expanded: calendar=%s blocks=%s", calendar.id, blocks)

    def _drifted(self, calendar: CalendarRow, now: datetime) -> bool:
        """Whether the horizon the copy was expanded for moved by more than HORIZON_DRIFT."""
        if calendar.horizon_start is None:
            return False
        wanted = self.engine.config.horizon(now)
        return abs(wanted.start - calendar.horizon_start) > HORIZON_DRIFT
