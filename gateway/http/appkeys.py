"""Typed keys of what `create_app()` puts on the application, for handlers to read.

`SERVICES_KEY` holds the whole container (gateway/bootstrap.py); the keys below it name the
container's services one by one (filled from it) and, further down, what the features not yet
moved into the container still build in their own cleanup contexts."""

from __future__ import annotations

from typing import Protocol

import aiohttp
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.apikeys import ApiKeyStore
from gateway.audit import AuditLog
from gateway.availability.index import AvailabilityIndex
from gateway.availability.service import AvailabilityService
from gateway.booking.service import BookingService
from gateway.bootstrap import DisconnectConfig, Services
from gateway.connections.connect import ConnectService
from gateway.connections.disconnect import DisconnectHooks, DisconnectService
from gateway.connections.repository import IntegrationRepository
from gateway.connections.reshred import JournalReplay
from gateway.connections.tokens import TokenManager
from gateway.db.listener import CacheCoherence
from gateway.google.oauth_client import GoogleOAuthClient
from gateway.livecalls import LiveCallLimits
from gateway.settings import Settings
from gateway.sync.channels import ChannelManager, PushConfig
from gateway.sync.config import SchedulerConfig, SyncConfig
from gateway.sync.engine import SyncEngine
from gateway.sync.scheduler import SyncScheduler
from gateway.webhooks.destinations import Resolve
from gateway.webhooks.service import EndpointService
from gateway.webhooks.store import WebhookStore
from gateway.webhooks.worker import DeliveryWorker
from vault.service import Vault
from vault.trust import TrustKeys

SERVICES_KEY = web.AppKey("services", Services)
SETTINGS_KEY = web.AppKey("settings", Settings)
ENGINE_KEY = web.AppKey("engine", AsyncEngine)
VAULT_KEY = web.AppKey("vault", Vault)
# The receipt-signing and deletion journal keys (vault/trust.py), opened with the vault.
TRUST_KEY = web.AppKey("trust_keys", TrustKeys)
APIKEYS_KEY = web.AppKey("api_keys", ApiKeyStore)
AUDIT_KEY = web.AppKey("audit", AuditLog)
INTEGRATIONS_KEY = web.AppKey("integrations", IntegrationRepository)
# Limits on live Google calls per API key and tenant, shared by availability and booking.
LIVE_LIMITS_KEY = web.AppKey("live_limits", LiveCallLimits)
# The in-process availability index (absent when GATEWAY_INDEX_MEMORY_MB=0) and what keeps it
# and the API-key cache coherent with the database.
INDEX_KEY = web.AppKey("availability_index", AvailabilityIndex)
COHERENCE_KEY = web.AppKey("cache_coherence", CacheCoherence)
CONNECT_KEY = web.AppKey("connect", ConnectService)
# Set before the app starts to change the defaults (tests shorten the timings); the
# hooks are filled by the features' `setup(app)` (see disconnect_routes.disconnect_hooks).
DISCONNECT_CONFIG_KEY = web.AppKey("disconnect_config", DisconnectConfig)
DISCONNECT_HOOKS_KEY = web.AppKey("disconnect_hooks", DisconnectHooks)
DISCONNECT_SERVICE_KEY = web.AppKey("disconnect_service", DisconnectService)
JOURNAL_REPLAY_KEY = web.AppKey("journal_replay", JournalReplay)
# The Google OAuth client and the TokenManager: absent when no Google OAuth client is
# configured (GOOGLE_CLIENT_ID/SECRET unset); handlers then answer 503.
GOOGLE_OAUTH_KEY = web.AppKey("google_oauth", GoogleOAuthClient)
TOKENS_KEY = web.AppKey("tokens", TokenManager)
# Sync, free/busy and slots, booking (absent when no Google OAuth client is configured).
SYNC_KEY = web.AppKey("sync", SyncEngine)
AVAILABILITY_KEY = web.AppKey("availability", AvailabilityService)
BOOKING_KEY = web.AppKey("booking", BookingService)
SYNC_CONFIG_KEY = web.AppKey("sync_config", SyncConfig)
SCHEDULER_CONFIG_KEY = web.AppKey("scheduler_config", SchedulerConfig)
# Push channels: the manager is present only when push is on and Google configured.
PUSH_CONFIG_KEY = web.AppKey("push_config", PushConfig)
CHANNELS_KEY = web.AppKey("push_channels", ChannelManager)
# Present only while this process runs a scheduler (Google configured, GATEWAY_SYNC_WORKER).
SCHEDULER_KEY = web.AppKey("sync_scheduler", SyncScheduler)
# Outbound webhooks: the endpoint service and its store, and the delivery worker (present
# only while this process runs one, GATEWAY_WEBHOOK_WORKER).
ENDPOINTS_KEY = web.AppKey("webhook_endpoints", EndpointService)
WEBHOOK_STORE_KEY = web.AppKey("webhook_store", WebhookStore)
WEBHOOK_WORKER_KEY = web.AppKey("webhook_worker", DeliveryWorker)
# Set before the app starts to resolve endpoint hosts another way (tests: loopback only).
WEBHOOK_RESOLVE_KEY: web.AppKey[Resolve] = web.AppKey("webhook_resolve")
# One client session for every outbound call to Google (connection pooling, one timeout policy).
HTTP_KEY = web.AppKey("http", aiohttp.ClientSession)


class SyncNudge(Protocol):
    """Wakes this process's sync scheduler for a calendar whose sync was just requested (a
    push notification, a booking): the request itself is durable in the database
    (`calendars.sync_requested_at`), the nudge only saves the scheduler's next tick."""

    def __call__(self, calendar_id: str) -> None: ...


# Set by the sync scheduler's wiring when it runs in this process; absent otherwise.
SYNC_NUDGE_KEY = web.AppKey("sync_nudge", SyncNudge)
