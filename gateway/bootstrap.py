"""Building the gateway's services once, from settings, into one frozen container.

    async with open_services(settings) as services:   # inside an aiohttp cleanup context
        services.tokens, services.connect, ...

`open_services` opens what the services stand on, in this order, and closes it in reverse:
the database engine (unless one is passed in, which the caller then owns), the stores over
it and the cache coherence listener (started: the caches answer only while it listens), the
vault with the trust keys beside it, and one HTTP client session for every outbound call to
Google. On these it builds the services. What needs no Google client always exists; what does
(`google_oauth`, `tokens`, `sync`, `scheduler`, `availability`, `booking`, `channels`) is
None when GOOGLE_CLIENT_ID/SECRET are unset, with a warning.

`create_app()` (gateway/app.py) runs this in its first cleanup context and publishes the
container (and, for handlers, each service under its app key, gateway/http/appkeys.py).
Nothing is started here beyond the cache listener: background work is built here and run by
its feature's cleanup context, in `create_app()`'s order: the deletion journal replay (at
start-up, before the sync scheduler starts) and the disconnect resumer
(gateway/http/disconnect_routes.py), the sync scheduler (sync_wiring.py), the push channels'
maintenance (push_wiring.py) and the webhook delivery worker (webhook_endpoint_routes.py);
housekeeping purges run through gateway.periodic.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.apikeys import ApiKeyStore
from gateway.audit import AuditLog
from gateway.availability.index import AvailabilityIndex
from gateway.availability.service import AvailabilityService
from gateway.booking.service import BookingService
from gateway.booking.store import BookingStore
from gateway.connections.connect import ConnectService
from gateway.connections.disconnect import DisconnectHooks, DisconnectService
from gateway.connections.journal import DeletionJournal
from gateway.connections.model import Integration
from gateway.connections.receipt_store import ReceiptStore
from gateway.connections.repository import IntegrationRepository
from gateway.connections.reshred import JournalReplay
from gateway.connections.tokens import TokenManager
from gateway.db.engine import create_engine
from gateway.db.listener import CacheCoherence
from gateway.db.migrate import ensure_migrated
from gateway.db.notify import Subscriber
from gateway.errors import ConfigurationError
from gateway.google.calendar import CalendarClient
from gateway.google.oauth_client import GoogleOAuthClient
from gateway.google.oauth_flow import (
    GoogleFlow,
    allow_plain_http_if_configured,
    quiet_token_logging,
)
from gateway.google.retry import RetryPolicy
from gateway.livecalls import LiveCallLimits, SharedAnswers
from gateway.settings import Settings
from gateway.sync.channel_store import ChannelStore
from gateway.sync.channels import ChannelManager, PushConfig, stop_locally
from gateway.sync.config import SchedulerConfig, SyncConfig
from gateway.sync.engine import SyncEngine
from gateway.sync.scheduler import SyncScheduler, default_owner
from gateway.sync.store import SyncStore
from gateway.webhooks.destinations import DestinationPolicy, Resolve, system_resolve
from gateway.webhooks.outbox import IntegrationOutbox
from gateway.webhooks.service import EndpointService
from gateway.webhooks.store import WebhookStore
from gateway.webhooks.worker import DeliveryWorker, WorkerConfig
from gateway.wiring import open_trust_keys, open_vault
from vault.service import Vault
from vault.trust import TrustKeys

log = logging.getLogger(__name__)

# Google answers in well under a second; 30 s bounds a hung connection without cutting a slow
# but live one. Each call site may set a tighter timeout.
_HTTP_TIMEOUT = aiohttp.ClientTimeout(total=30, connect=10)


@dataclass(frozen=True)
class DisconnectConfig:
    """Timing of disconnects. `lease_ttl_s` must exceed the revocation's retry budget (the
    longest step) with margin; `wait_s` is how long a DELETE waits for another process's run."""

    # Each revoke attempt may take the OAuth client's 10 s timeout: 3 attempts and their waits
    # bound the revocation (and a DELETE) to about 32 s, well inside the lease.
    retry: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(attempts=3, base_s=0.5, max_s=2.0, budget_s=10.0)
    )
    lease_ttl_s: float = 60.0
    wait_s: float = 5.0
    poll_s: float = 0.2
    resume_interval_s: float = 30.0
    retry_after_s: int = 5
    # How long the revocation waits for an unreachable key provider before the disconnect
    # completes without revoking at Google (see DisconnectService._wait_for_key_provider).
    key_outage_patience_s: float = 24 * 3600.0
    # How often a running process replays the deletion journal (it always does at start-up).
    journal_replay_interval_s: float = 60.0


@dataclass(frozen=True)
class Services:
    """Every service of one running gateway, built once by `open_services`."""

    settings: Settings
    engine: AsyncEngine
    vault: Vault
    # The receipt-signing and deletion journal keys (vault/trust.py), opened with the vault.
    trust_keys: TrustKeys
    # One client session for every outbound call to Google (pooling, one timeout policy).
    http: aiohttp.ClientSession
    api_keys: ApiKeyStore
    audit: AuditLog
    integrations: IntegrationRepository
    # Limits on live Google calls per API key and tenant, shared by availability and booking.
    live_limits: LiveCallLimits
    # The in-process availability index (None when GATEWAY_INDEX_MEMORY_MB=0) and what keeps
    # it and the API-key cache coherent with the database.
    index: AvailabilityIndex | None
    coherence: CacheCoherence
    connect: ConnectService
    # Disconnects, and the replay of the deletion journal (both run by
    # gateway/http/disconnect_routes.py: the replay at start-up and on a timer, the resumer).
    disconnect_config: DisconnectConfig
    journal_replay: JournalReplay
    disconnect: DisconnectService
    sync_config: SyncConfig
    scheduler_config: SchedulerConfig
    # None when no Google OAuth client is configured (and so everything that calls Google).
    google_oauth: GoogleOAuthClient | None
    tokens: TokenManager | None
    sync: SyncEngine | None
    # This process's sync scheduler, built but not started (gateway.http.sync_wiring starts
    # it once the deletion journal was replayed); None also when GATEWAY_SYNC_WORKER=false.
    scheduler: SyncScheduler | None
    availability: AvailabilityService | None
    booking: BookingService | None
    push_config: PushConfig
    # The push channel manager (its maintenance loop is run by gateway/http/push_wiring.py):
    # None when push is off (GATEWAY_PUSH_ENABLED=false, no usable GATEWAY_PUBLIC_URL) or no
    # Google client is configured.
    channels: ChannelManager | None
    # Outbound webhooks: the tenants' endpoints, and the delivery worker (built, not started:
    # gateway/http/webhook_endpoint_routes.py runs it) when GATEWAY_WEBHOOK_WORKER is true.
    webhook_store: WebhookStore
    endpoints: EndpointService
    webhook_worker: DeliveryWorker | None


def push_config(settings: Settings) -> PushConfig:
    """The channel settings: GATEWAY_PUBLIC_URL and GATEWAY_PUSH_*."""
    return PushConfig(
        address=settings.push_webhook_url,
        renew_before_s=settings.push_renew_before_s,
        silence_threshold_s=settings.push_silence_threshold_s,
    )


def sync_config(settings: Settings) -> SyncConfig:
    """The sync settings: GATEWAY_SYNC_*, GATEWAY_TENTATIVE_IS_BUSY, ..._STORE_EVENT_DETAILS."""
    return SyncConfig(
        horizon_past_days=settings.sync_horizon_past_days,
        horizon_future_days=settings.sync_horizon_future_days,
        tentative_is_busy=settings.tentative_is_busy,
        store_event_details=settings.store_event_details,
    )


def scheduler_config(settings: Settings) -> SchedulerConfig:
    """GATEWAY_SYNC_TICK_S, ..._POLL_INTERVAL_S, ..._LEASE_S, ..._CONCURRENCY, ..._BACKOFF_*.
    `create_app()` calls it before the app starts, so a bad pair fails at once."""
    try:
        return SchedulerConfig(
            tick_s=settings.sync_tick_s,
            poll_interval_s=settings.sync_poll_interval_s,
            # A pushed calendar's copy is trusted this long (gateway.sync.freshness): poll it
            # as often, so a channel that went silent costs no more staleness than that.
            safety_poll_interval_s=settings.push_trust_s,
            lease_s=settings.sync_lease_s,
            concurrency=settings.sync_concurrency,
            backoff_base_s=settings.sync_backoff_base_s,
            backoff_max_s=settings.sync_backoff_max_s,
        )
    except ValueError:
        raise ConfigurationError(
            "GATEWAY_SYNC_BACKOFF_MAX_S: must be at least GATEWAY_SYNC_BACKOFF_BASE_S"
        ) from None


@asynccontextmanager
async def open_services(
    settings: Settings,
    *,
    engine: AsyncEngine | None = None,
    scheduling: SchedulerConfig | None = None,
    resolve: Resolve = system_resolve,
    disconnecting: DisconnectConfig | None = None,
    hooks: DisconnectHooks | None = None,
) -> AsyncIterator[Services]:
    """Open storage, vault and HTTP session, build every service on them, close on exit.
    Pass `engine` to share one (tests do): it is then not disposed here. `scheduling` is
    `scheduler_config(settings)` when not given; `resolve` looks up webhook endpoint hosts;
    `hooks` are the disconnect steps' hooks that the features registered."""
    scheduling = scheduling or scheduler_config(settings)
    syncing = sync_config(settings)
    disconnecting = disconnecting or DisconnectConfig()
    hooks = hooks if hooks is not None else DisconnectHooks()
    async with AsyncExitStack() as stack:
        if engine is None:
            engine = await create_engine(
                settings.database_url, pool_size=settings.database_pool_size
            )
            stack.push_async_callback(engine.dispose)
        await ensure_migrated(engine)
        api_keys = ApiKeyStore(engine, cache=True)
        audit = AuditLog(engine)
        integrations = IntegrationRepository(engine, announcer=IntegrationOutbox())
        caches: list[Subscriber] = [api_keys]
        index = None
        if settings.index_memory_mb > 0:
            index = AvailabilityIndex(budget_bytes=settings.index_memory_mb * 2**20)
            caches.append(index)
        # Stopped before the engine: the caches answer only while it listens for changes
        # (gateway.db.listener).
        coherence = CacheCoherence(engine, settings.database_url, caches=caches)
        await coherence.start()
        stack.push_async_callback(coherence.stop)
        vault = await open_vault(settings, engine)
        stack.push_async_callback(vault.close)
        trust_keys = await open_trust_keys(settings, vault)
        http = await stack.enter_async_context(
            aiohttp.ClientSession(timeout=_HTTP_TIMEOUT, raise_for_status=False)
        )
        google_oauth, tokens = None, None
        quiet_token_logging()
        flow = None
        if settings.google_configured:
            allow_plain_http_if_configured(settings)
            flow = GoogleFlow(settings)
            google_oauth = GoogleOAuthClient.from_settings(http, settings)
            # Nothing to close: the HTTP session is closed above, and in-flight refreshes end
            # with the requests that started them.
            tokens = TokenManager(
                repository=integrations,
                vault=vault,
                oauth=google_oauth,
                audit=audit,
                margin_s=settings.token_refresh_margin_s,
            )
        else:
            log.warning("Google OAuth client not configured: token refresh is disabled")
        connect = ConnectService(
            repository=integrations,
            vault=vault,
            audit=audit,
            settings=settings,
            flow=flow,
            revoker=google_oauth,
        )
        journal = DeletionJournal(settings.deletion_journal_path, trust_keys.journal_key)
        receipts = ReceiptStore(engine)
        journal_replay = JournalReplay(
            journal=journal,
            receipts=receipts,
            engine=engine,
            repository=integrations,
            vault=vault,
            audit=audit,
            hooks=hooks,
        )
        disconnect = DisconnectService(
            repository=integrations,
            vault=vault,
            audit=audit,
            # Without a Google client nobody could have connected, but a disconnect must still
            # destroy whatever is stored: receipts then say revoked_at_google=false.
            revoker=google_oauth,
            # Step 2 (stopping watch channels) gets its tokens from the one TokenManager.
            tokens=tokens,
            retry=disconnecting.retry,
            owner=default_owner(),
            hooks=hooks,
            lease_ttl_s=disconnecting.lease_ttl_s,
            key_outage_patience=timedelta(seconds=disconnecting.key_outage_patience_s),
            signing=trust_keys,
            receipts=receipts,
            journal=journal,
        )
        live_limits = LiveCallLimits(
            per_key_per_min=settings.live_calls_per_min_per_key,
            per_tenant_per_min=settings.live_calls_per_min_per_tenant,
        )
        sync, scheduler, availability, booking = None, None, None, None
        if tokens is None:
            log.warning("Google OAuth client not configured: calendar sync is disabled")
        else:
            sync = SyncEngine(
                store=SyncStore(
                    engine, webhook_coalesce_s=settings.webhook_availability_coalesce_s
                ),
                client=await CalendarClient.create(http, settings.google_calendar_api_url),
                tokens=tokens,
                config=syncing,
            )
            if settings.sync_worker:
                scheduler = SyncScheduler(engine=sync, config=scheduling)
            else:
                log.info("GATEWAY_SYNC_WORKER=false: this process syncs no calendar by itself")
            # Availability and booking call Google live within the per key / tenant limits,
            # each through its own client.
            availability = AvailabilityService(
                sync=sync,
                client=await CalendarClient.create(
                    http, settings.google_calendar_api_url, before_send=live_limits.admit
                ),
                tokens=tokens,
                concurrency=settings.freebusy_concurrency,
                shared=SharedAnswers(ttl=timedelta(seconds=settings.live_answer_reuse_s)),
                index=index,
                push_trust_s=settings.push_trust_s,
            )
            booking = BookingService(
                store=BookingStore(engine),
                client=await CalendarClient.create(
                    http, settings.google_calendar_api_url, before_send=live_limits.admit
                ),
                tokens=tokens,
                sync=sync,
                availability=availability,
                max_staleness=timedelta(seconds=settings.booking_max_staleness_s),
                nudge=scheduler.nudge if scheduler is not None else None,
            )
        pushing = push_config(settings)
        channels = await _channels(settings, http, engine, tokens, pushing, scheduling)
        policy = DestinationPolicy.from_settings(
            settings.webhook_allow_insecure_loopback, settings.webhook_allowed_networks
        )
        webhook_store = WebhookStore(engine)
        endpoints = EndpointService(webhook_store, vault, policy, resolve)
        webhook_worker = None
        if settings.webhook_worker:
            webhook_worker = DeliveryWorker(
                webhook_store,
                endpoints,
                policy,
                resolve,
                owner=default_owner(),
                config=WorkerConfig(
                    tick_s=settings.webhook_tick_s,
                    lease_s=settings.webhook_lease_s,
                    timeout_s=min(settings.webhook_timeout_s, settings.webhook_lease_s / 2),
                ),
            )
        yield Services(
            settings=settings,
            engine=engine,
            vault=vault,
            trust_keys=trust_keys,
            http=http,
            api_keys=api_keys,
            audit=audit,
            integrations=integrations,
            live_limits=live_limits,
            index=index,
            coherence=coherence,
            connect=connect,
            disconnect_config=disconnecting,
            journal_replay=journal_replay,
            disconnect=disconnect,
            google_oauth=google_oauth,
            tokens=tokens,
            sync_config=syncing,
            scheduler_config=scheduling,
            sync=sync,
            scheduler=scheduler,
            availability=availability,
            booking=booking,
            push_config=pushing,
            channels=channels,
            webhook_store=webhook_store,
            endpoints=endpoints,
            webhook_worker=webhook_worker,
        )


async def _channels(
    settings: Settings,
    http: aiohttp.ClientSession,
    engine: AsyncEngine,
    tokens: TokenManager | None,
    config: PushConfig,
    scheduling: SchedulerConfig,
) -> ChannelManager | None:
    """The push channel manager when push is on; in any case, with a Google client, a lost
    grant stops its integration's channels locally."""
    store = ChannelStore(engine)
    if tokens is not None:

        async def on_reauth(integration: Integration) -> None:
            # No grant left to call Google with: refuse the channels' notifications from now.
            await stop_locally(store, integration)

        tokens.add_reauth_hook(on_reauth)
    if not settings.push_enabled:
        log.info("push notifications are off (GATEWAY_PUSH_ENABLED=false): calendars are polled")
        return None
    if not settings.push_address_usable:
        log.warning(
            "push notifications are off: Google only delivers to https addresses and "
            "GATEWAY_PUBLIC_URL is not one; calendars are polled"
        )
        return None
    if tokens is None:
        return None  # warned already: no Google client, nothing to watch
    if not settings.public_url.startswith("https://"):
        log.warning("push webhook address is plain http on loopback: only the emulator accepts it")
    client = await CalendarClient.create(http, settings.google_calendar_api_url)
    return ChannelManager(
        store=store,
        client=client,
        tokens=tokens,
        config=config,
        backoff_s=scheduling.backoff_s,
    )
