"""Google push channels: opening, renewing, replacing and stopping them, and judging the
notifications they deliver.

    manager = ChannelManager(store=ChannelStore(db), client=calendar_client, tokens=token_manager,
                             config=PushConfig(address="https://gw.example.com/webhooks/google/calendar"))
    report = await manager.run_once()        # the maintenance pass every process runs
    receiver = NotificationReceiver(ChannelStore(db))
    verdict = await receiver.receive(notification)   # what the webhook does

Lifecycle (states in `gateway.sync.channel_store`):

* every calendar with a complete copy (`active_generation` set) of an active integration gets a
  channel: a random, non-personal id and a fresh 256-bit token per channel, of which only the
  SHA-256 is stored. The first one is opened by the scheduler's sync of a new calendar, just
  before its first full sync lists it (`open_before_first_sync`), not at the next maintenance
  pass: every change after the listing began is then notified, so Google's first message
  (`sync`) has no gap to close and starts no sync. If that fails, it is opened right after
  a full sync has committed (`open_after_sync`), and the `sync` message then syncs what
  changed since the listing. The row is claimed (`opening`) BEFORE events.watch is called,
  because Google may deliver the first notification (`sync`) before it answers;
* a calendar whose channel Google refused (`push.webhookUrlNotHttps`, a 5xx, ...) is retried by
  this process with the sync scheduler's backoff (`SchedulerConfig.backoff_s`: seconds at
  first, doubling up to its maximum; `retry_due`, which the wiring runs when `next_retry_at`
  comes), and `calendars.push_error` says why push is off (`push_refused: <Google's reason>`
  or `push_failed: <code>`) until a channel opens;
* the first notification whose token matches makes the channel `active`. Until then the
  calendar counts as polling (the scheduler polls calendars without an active channel), and an
  `opening` channel older than `silence_threshold_s` is replaced;
* `renew_before_s` before expiry a new channel is opened, and only once Google has answered for
  it is the old one stopped (`channels.stop`); the old one's notifications are refused from then;
* a disconnect stops its integration's channels at Google before it revokes the grant (it
  hands this module the still-valid grant), best effort within `stop_budget_s`, then forgets
  them; a channel whose integration lost its grant (reauth) cannot be stopped at Google (no
  token is left to call it with): it is stopped locally, so its notifications are refused, and
  Google ends it at its expiration at the latest.

Concurrency across gateway processes is the store's claim (one healthy channel per calendar).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import re
import secrets
from base64 import urlsafe_b64encode
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from gateway.clock import utc_now
from gateway.connections.errors import IntegrationInactive
from gateway.connections.model import Integration
from gateway.google.calendar import CalendarClient, TokenSource
from gateway.google.errors import (
    GoogleError,
    GoogleNotFound,
    InsufficientScope,
    RevokedOrInvalidToken,
    TransientGoogleError,
)
from gateway.sync.calendar_store import CalendarRow
from gateway.sync.channel_store import (
    LIVE,
    STOPPED,
    STOPPING,
    ChannelRow,
    ChannelStore,
    WatchTarget,
)
from gateway.sync.config import SchedulerConfig
from gateway.sync.engine import ManagedTokenSource, TokenKeeper
from gateway.sync.lease_store import ClaimOffer

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/google/calendar"
RESOURCE_STATES = frozenset({"sync", "exists", "not_exists"})

# Calendars remembered between `open_before_first_sync` and `open_after_sync` at most.
MAX_OPENED_FIRST = 10_000

RandomBytes = Callable[[int], bytes]
Backoff = Callable[[int, float], float]
"""Seconds to wait after the n-th failure in a row, given a random number in [0, 1)."""

_REASON = re.compile(r"[^A-Za-z0-9_.]")


def token_digest(token: str) -> bytes:
    """SHA-256 of a channel token. A fast hash is right: the token has 256 random bits."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def new_channel_id(random_bytes: bytes) -> str:
    """`gwch-` + 32 hex characters: random, and nothing about the user or calendar in it."""
    if len(random_bytes) != 16:
        raise ValueError("a channel id takes 16 random bytes")
    return "gwch-" + random_bytes.hex()


def new_channel_token(random_bytes: bytes) -> str:
    """The per-channel secret Google echoes in X-Goog-Channel-Token (43 characters)."""
    if len(random_bytes) != 32:
        raise ValueError("a channel token takes 32 random bytes")
    return urlsafe_b64encode(random_bytes).decode("ascii").rstrip("=")


@dataclass(frozen=True)
class PushConfig:
    """Timing of push channels (settings GATEWAY_PUSH_*).

    address              GATEWAY_PUBLIC_URL + /webhooks/google/calendar
    renew_before_s       a channel is replaced this long before it expires (Google's last
                         about 7 days)
    silence_threshold_s  a channel whose first notification did not arrive within this is
                         replaced (Google sends `sync` at once)
    keep_stopped_s       stopped rows are deleted this long after their expiry
    batch                calendars handled per maintenance pass; `concurrency` of them at once
    stop_budget_s        a disconnect asks Google to stop its channels for at most this long
                         (it must end well within the disconnect job's lease)
    """

    address: str
    renew_before_s: float = 86_400.0
    silence_threshold_s: float = 120.0
    keep_stopped_s: float = 86_400.0
    batch: int = 500
    concurrency: int = 8
    stop_budget_s: float = 10.0

    @property
    def renew_before(self) -> timedelta:
        return timedelta(seconds=self.renew_before_s)

    @property
    def silence(self) -> timedelta:
        return timedelta(seconds=self.silence_threshold_s)


def push_error(exc: Exception) -> str:
    """Why a channel could not be opened, as the stable code the status shows: `push_refused:
    <Google's reason>` when Google said no (e.g. `push_refused: webhookUrlNotHttps`),
    `push_failed: <code>` when it could not be asked or answered nonsense."""
    if isinstance(exc, TransientGoogleError):
        return f"push_failed: {exc.code}"
    if isinstance(exc, GoogleError):
        reason = (exc.google_error or exc.code).removeprefix("push.")
        return "push_refused: " + _REASON.sub("", reason)[:48]
    return "push_failed: unexpected_response"


@dataclass
class _Retry:
    """A calendar whose channel Google refused: when this process tries again."""

    target: WatchTarget
    attempts: int
    until: datetime


@dataclass(frozen=True)
class MaintenanceReport:
    """What one maintenance pass did (counts only)."""

    opened: int = 0
    failed: int = 0
    stopped: int = 0
    retired: int = 0  # ended locally: expired, or of an inactive integration
    deleted: int = 0


class ChannelManager:
    """Opens, renews, replaces and stops the watch channels of synced calendars."""

    def __init__(
        self,
        *,
        store: ChannelStore,
        client: CalendarClient,
        tokens: TokenKeeper,
        config: PushConfig,
        clock: Callable[[], datetime] = utc_now,
        random_bytes: RandomBytes = secrets.token_bytes,
        backoff_s: Backoff | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self._client = client
        self._tokens = tokens
        self.config = config
        self._clock = clock
        self._random = random_bytes
        # The sync scheduler's formula (one backoff rule in the gateway), wired with its
        # settings (GATEWAY_SYNC_BACKOFF_*).
        self._backoff_s = backoff_s or SchedulerConfig().backoff_s
        self._rng = rng
        # calendar id -> when this process tries to open a channel for it again. In memory: a
        # restart retries at once, which is cheap, and the calendar is polled meanwhile.
        self._backoff: dict[str, _Retry] = {}
        # Set when a retry was planned: the maintenance loop may have to wake earlier.
        self.retry_planned = asyncio.Event()
        # Calendars whose channel `open_before_first_sync` opened, until `open_after_sync`
        # (after that sync) skips its claim for them. Bounded: forgetting costs one claim.
        self._opened_first: set[str] = set()

    def __repr__(self) -> str:
        return f"ChannelManager({self.config!r})"

    async def run_once(self) -> MaintenanceReport:
        """One maintenance pass: stop (locally) expired channels and those of inactive
        integrations, open a channel for every calendar without a healthy one (new, to renew,
        or to replace a silent one), retry pending stops, delete old stopped rows."""
        config = self.config
        now = self._clock()
        retired = await self.store.expire(now) + await self.store.stop_orphans()
        waiting = {k for k, retry in self._backoff.items() if retry.until > now}
        # Calendars in backoff are skipped here, so the listing asks for that many more: they
        # must not crowd out the others.
        listed = await self.store.targets(
            now,
            renew_before=config.renew_before,
            silence=config.silence,
            limit=config.batch + len(waiting),
        )
        targets = [t for t in listed if t.calendar_id not in waiting][: config.batch]
        slots = asyncio.Semaphore(config.concurrency)

        async def one(target: WatchTarget) -> bool | None:
            async with slots:
                return await self.open_channel(target)

        results = await asyncio.gather(*(one(t) for t in targets))
        stopped = 0
        for row in await self.store.channels_in_state(STOPPING, limit=config.batch):
            stopped += int(await self._stop(row))
        deleted = await self.store.delete_finished(
            self._clock(), keep=timedelta(seconds=config.keep_stopped_s)
        )
        report = MaintenanceReport(
            opened=sum(1 for r in results if r is True),
            failed=sum(1 for r in results if r is False),
            stopped=stopped,
            retired=retired,
            deleted=deleted,
        )
        if report != MaintenanceReport():
            log.info("push maintenance: %s", report)
        return report

    async def open_before_first_sync(self, target: WatchTarget) -> bool | None:
        """The scheduler's hook before a calendar without a copy is synced (its first full
        sync): open its first channel now, before the sync lists the calendar, so that every
        change from the listing on is notified (None when it has a healthy one, or waits for a
        retry; see `open_channel`)."""
        if self._waiting(target.calendar_id):
            return None
        opened = await self.open_channel(target, first=True)
        if opened:
            if len(self._opened_first) >= MAX_OPENED_FIRST:
                self._opened_first.clear()
            self._opened_first.add(target.calendar_id)
        return opened

    async def open_after_sync(self, target: WatchTarget) -> bool | None:
        """The scheduler's hook after a calendar's full sync committed: open its first channel
        now, unless `open_before_first_sync` just did (None when it has a healthy one, or waits
        for a retry; see `open_channel`)."""
        if target.calendar_id in self._opened_first:
            self._opened_first.discard(target.calendar_id)
            return None
        if self._waiting(target.calendar_id):
            return None
        return await self.open_channel(target)

    def _waiting(self, calendar_id: str) -> bool:
        """Whether the calendar waits for a retry after Google refused its channel."""
        retry = self._backoff.get(calendar_id)
        return retry is not None and retry.until > self._clock()

    def now(self) -> datetime:
        """This manager's clock (the maintenance loop measures retry times with it)."""
        return self._clock()

    def next_retry_at(self) -> datetime | None:
        """When the earliest refused calendar is due to be retried, or None."""
        return min((r.until for r in self._backoff.values()), default=None)

    async def retry_due(self) -> int:
        """Try again for every calendar whose backoff is over; returns how many opened."""
        now = self._clock()
        due = [r.target for r in self._backoff.values() if r.until <= now]
        slots = asyncio.Semaphore(self.config.concurrency)

        async def one(target: WatchTarget) -> bool | None:
            async with slots:
                return await self.open_channel(target)

        results = await asyncio.gather(*(one(t) for t in due))
        return sum(1 for r in results if r is True)

    def _plan_retry(self, target: WatchTarget) -> datetime:
        previous = self._backoff.get(target.calendar_id)
        attempts = previous.attempts + 1 if previous is not None else 1
        until = self._clock() + timedelta(seconds=self._backoff_s(attempts, self._rng()))
        self._backoff[target.calendar_id] = _Retry(target, attempts, until)
        self.retry_planned.set()
        return until

    async def open_channel(self, target: WatchTarget, *, first: bool = False) -> bool | None:
        """Claim and open a channel for the calendar, then stop the ones it replaces. None when
        no channel is needed (or another process claimed it), False when Google refused (a
        retry is planned and the reason recorded for the status). `first`: the calendar may
        have no copy yet (`open_before_first_sync`)."""
        token = new_channel_token(self._random(32))
        channel_id = new_channel_id(self._random(16))
        config = self.config
        claimed = await self.store.claim(
            target,
            channel_id=channel_id,
            token_sha256=token_digest(token),
            now=self._clock(),
            renew_before=config.renew_before,
            silence=config.silence,
            first=first,
        )
        if not claimed:
            self._backoff.pop(target.calendar_id, None)  # healthy, gone, or another's to open
            return None
        tokens = ManagedTokenSource(self._tokens, target.integration_id)
        try:
            answer = await self._client.watch_events(
                tokens,
                target.integration_id,
                target.google_calendar_id,
                channel_id=channel_id,
                address=config.address,
                token=token,
            )
            resource_id = str(answer["resourceId"])
            expires_at = datetime.fromtimestamp(int(answer["expiration"]) / 1000, UTC)
        except IntegrationInactive:
            # The grant died meanwhile: no channel, no retry (it is not eligible any more).
            await self.store.forget(channel_id)
            self._backoff.pop(target.calendar_id, None)
            return False
        except (GoogleError, KeyError, ValueError) as exc:
            await self.store.forget(channel_id)
            reason = push_error(exc)
            await self.store.record_push_error(target.calendar_id, reason)
            until = self._plan_retry(target)
            log.warning(
                "push channel not opened: calendar=%s error=%s retry_at=%s",
                target.calendar_id,
                reason,
                until.isoformat(),
            )
            return False
        except BaseException:
            await self.store.forget(channel_id)
            raise
        self._backoff.pop(target.calendar_id, None)
        # New first, then the old (stopping since this transaction): no moment without one.
        replaced = await self.store.record_opened(
            channel_id, resource_id, expires_at, calendar_id=target.calendar_id, uncopied=first
        )
        log.info(
            "push channel opened: calendar=%s channel=%s expires_at=%s",
            target.calendar_id,
            channel_id,
            expires_at.isoformat(),
        )
        for old in replaced:
            await self._stop(old)
        return True

    async def _stop(self, row: ChannelRow, tokens: TokenSource | None = None) -> bool:
        """channels.stop for a `stopping` row, with `tokens` or else the integration's own
        (TokenManager); True when it is over (stopped, or Google does not know it), False when
        Google could not be reached (retried next pass)."""
        if row.resource_id is not None:
            if tokens is None:
                tokens = ManagedTokenSource(self._tokens, row.integration_id)
            try:
                await self._client.stop_channel(
                    tokens, row.integration_id, channel_id=row.id, resource_id=row.resource_id
                )
            except TransientGoogleError as exc:
                log.warning("push channel stop deferred: channel=%s error=%s", row.id, exc.code)
                return False
            except GoogleNotFound:
                pass  # expired or already stopped: nothing left at Google
            except (IntegrationInactive, RevokedOrInvalidToken, InsufficientScope) as exc:
                # No usable grant: Google ends the channel at its expiration; we refuse it now.
                log.info("push channel stopped locally: channel=%s reason=%s", row.id, exc.code)
            except GoogleError as exc:
                log.warning("push channel stop refused: channel=%s error=%s", row.id, exc.code)
        await self.store.mark_stopped(row.id)
        log.info("push channel stopped: calendar=%s channel=%s", row.calendar_id, row.id)
        return True

    async def stop_integration(self, integration: Integration, tokens: TokenSource | None) -> int:
        """Disconnect hook (step 2, before the revocation): stop every channel of the
        integration at Google with `tokens`, its still-valid grant, then delete every row
        (nothing of the integration is kept). Returns how many channels were not stopped yet.

        Best effort within `config.stop_budget_s`: a channel Google cannot be asked to stop
        (down, slow, the grant already dead, `tokens` None) is forgotten all the same; its
        notifications find no row and are refused, and Google ends it at its expiration.
        Idempotent; raises only when the database fails (the step is then retried)."""
        await self.store.stop_integration(integration.id, STOPPING)
        pending = await self.store.channels_in_state(STOPPING, integration_id=integration.id)
        if tokens is not None and pending:
            try:
                async with asyncio.timeout(self.config.stop_budget_s):
                    for row in pending:
                        await self._stop(row, tokens)
            except TimeoutError:
                log.warning(
                    "push channels not all stopped at Google within %gs: integration=%s",
                    self.config.stop_budget_s,
                    integration.id,
                )
        await forget_integration(self.store, integration)
        return len(pending)


async def stop_locally(store: ChannelStore, integration: Integration) -> int:
    """Stop every channel of the integration without calling Google (no token to call it
    with): their notifications are refused from now on. Returns how many were live."""
    moved = await store.stop_integration(integration.id, STOPPED)
    if moved:
        log.info(
            "push channels stopped locally: integration=%s count=%d", integration.id, len(moved)
        )
    return len(moved)


async def forget_integration(store: ChannelStore, integration: Integration) -> int:
    """Delete every channel row of a disconnecting integration (nothing of it is kept); their
    notifications find no row and are refused. Returns how many were not stopped yet."""
    forgotten = await store.delete_integration(integration.id)
    if forgotten:
        log.info("push channels forgotten: integration=%s count=%d", integration.id, forgotten)
    return forgotten


# -- notifications -------------------------------------------------------------------------------


class Verdict(StrEnum):
    """What the webhook answers: `refused` is 404, the others 200."""

    REFUSED = "refused"  # unknown, stopped or expired channel, wrong token or resource
    ACCEPTED = "accepted"  # verified and new: one sync of the calendar was requested
    DUPLICATE = "duplicate"  # verified, but this message number (or a later one) was seen


@dataclass(frozen=True)
class Notification:
    """The X-Goog-* headers of one notification, already checked for shape."""

    channel_id: str
    token: str | None
    resource_id: str
    resource_state: str
    message_number: int

    def __repr__(self) -> str:
        # The token is the channel's secret.
        return (
            f"Notification(channel_id={self.channel_id!r}, state={self.resource_state!r}, "
            f"number={self.message_number})"
        )


@dataclass(frozen=True)
class Received:
    verdict: Verdict
    calendar_id: str | None = None
    # The calendar's row when the notification's transaction leased it to the offering
    # scheduler (`receive(offer=...)`): that scheduler starts the sync now.
    claimed: CalendarRow | None = None
    # A sync of the calendar was requested (the scheduler should look now).
    requested: bool = False


class NotificationReceiver:
    """Judges notifications against the stored channels; never calls Google."""

    def __init__(self, store: ChannelStore, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._store = store
        self._clock = clock

    async def receive(
        self, notification: Notification, *, offer: ClaimOffer | None = None
    ) -> Received:
        """Verify the channel (id, token in constant time, state, expiry, resource id) and,
        for a new message, request one sync of its calendar (coalesced; never run here).

        `exists`/`not_exists` say the calendar changed: they request the sync. The first
        message, `sync`, requests one only for a calendar with a copy: it closes the gap
        between the listing of that copy and the channel's opening (changes in between were
        notified to nobody, yet the calendar now counts as pushed). A calendar's first channel
        opens before its first listing (`ChannelManager.open_before_first_sync`): no gap.
        An offer is never used for `sync`.
        """
        channel = await self._store.get(notification.channel_id)
        if channel is None:
            return Received(Verdict.REFUSED)
        presented = token_digest(notification.token or "")
        token_ok = hmac.compare_digest(presented, channel.token_sha256)
        now = self._clock()
        if (
            not token_ok
            or notification.token is None
            or channel.state not in LIVE
            or (channel.expires_at is not None and channel.expires_at <= now)
            or (channel.resource_id is not None and channel.resource_id != notification.resource_id)
        ):
            return Received(Verdict.REFUSED)
        accepted = await self._store.accept_message(
            channel,
            resource_id=notification.resource_id,
            message_number=notification.message_number,
            now=now,
            offer=offer,
            sync_message=notification.resource_state == "sync",
        )
        if not accepted.accepted:
            return Received(Verdict.DUPLICATE, channel.calendar_id)
        return Received(
            Verdict.ACCEPTED, channel.calendar_id, accepted.claimed, requested=accepted.requested
        )
