"""The gateway's tables, on one MetaData that Alembic migrations are written against.

Tables owned by the vault are defined by the vault (which must not import the gateway) and
attached here.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    text,
)

from gateway.db.values import EpochSeconds
from vault.store import data_keys_table

# A naming convention makes constraint names identical on SQLite and PostgreSQL, so migrations
# that alter constraints work the same on both.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

vault_data_keys = data_keys_table(metadata)

api_keys = Table(
    "api_keys",
    metadata,
    # The public half of a key (`cgw_<key_id>_<secret>`): safe to show in lists and logs.
    Column("key_id", String(32), primary_key=True),
    Column("tenant_id", String(64), nullable=False, index=True),
    Column("name", String(200), nullable=True),
    Column("scopes", String(200), nullable=False),  # space separated
    # SHA-256 of the 256-bit random secret. A fast hash is right here: the secret has full
    # entropy, so there is nothing for a slow KDF to protect against.
    Column("secret_sha256", LargeBinary(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

integrations = Table(
    "integrations",
    metadata,
    Column("id", String(32), primary_key=True),  # "int_" + 24 hex
    Column("tenant_id", String(64), nullable=False),
    # The customer's own id for the person whose calendar this is (opaque to us).
    Column("user_id", String(200), nullable=False),
    # pending -> active <-> needs_reauth -> disconnecting -> disconnected
    Column("status", String(20), nullable=False),
    Column("google_sub", String(255), nullable=True),
    Column("google_email", String(320), nullable=True),
    Column("granted_scopes", Text, nullable=False, default=""),  # space separated
    # The private extended property value on events this integration booked: only they are
    # "ours" (kept in full, listed by GET .../events); random per integration, so the same
    # Google account under another tenant, or connected again, cannot claim them.
    Column("owner_tag", String(32), nullable=False),
    # Tokens, sealed by the vault (bound to tenant, integration and purpose). Never plaintext.
    Column("refresh_token", LargeBinary, nullable=True),
    Column("access_token", LargeBinary, nullable=True),
    Column("access_token_expires_at", DateTime(timezone=True), nullable=True),
    Column("reauth_reason", String(64), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("last_refresh_at", DateTime(timezone=True), nullable=True),
    # Disconnect is a durable job: the step reached, who works on it, and the final receipt.
    Column("disconnect_requested_at", DateTime(timezone=True), nullable=True),
    Column("disconnect_step", Integer, nullable=False, default=0),
    Column("disconnect_lease_owner", String(64), nullable=True),
    Column("disconnect_lease_until", DateTime(timezone=True), nullable=True),
    Column("disconnect_receipt", Text, nullable=True),  # JSON, no secret
    # Until when a process's discovery of the integration's calendars holds it, or a failed
    # one's backoff (gateway.sync.lease_store.LeaseStore.claim_discovery): one process asks
    # Google, not every one that looks.
    Column("discovery_until", DateTime(timezone=True), nullable=True),
    # Incremented with every change of status or of its calendars (gateway.db.notify).
    Column("version", Integer, nullable=False, server_default="0"),
    Index("ix_integrations_tenant_user", "tenant_id", "user_id"),
    Index("ix_integrations_status", "status"),
)

connect_sessions = Table(
    "connect_sessions",
    metadata,
    # SHA-256 of the OAuth `state` (128+ random bits): the state itself is never stored, so a
    # database reader cannot complete someone else's connection.
    Column("state_sha256", String(64), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("user_id", String(200), nullable=False),
    Column("return_url", Text, nullable=False),
    Column("login_hint", String(320), nullable=True),
    # PKCE verifier: a short-lived secret needed at the callback; deleted when the session is used.
    Column("code_verifier", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("consumed_at", DateTime(timezone=True), nullable=True),
    # The caller's opaque value, handed back on the final redirect (login CSRF check); wiped
    # when the session is used.
    Column("app_state", String(512), nullable=True),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("tenant_id", String(64), nullable=True),
    Column("integration_id", String(32), nullable=True),
    Column("action", String(64), nullable=False),  # connect, refresh, reauth, disconnect, ...
    Column("outcome", String(64), nullable=False),  # ok, or a reason code
    Column("request_id", String(64), nullable=True),
    # Never a token, an email or event data: codes and counts only.
    Column("detail", Text, nullable=True),
    Index("ix_audit_log_integration", "integration_id"),
    Index("ix_audit_log_tenant_at", "tenant_id", "at"),
    Index("ix_audit_log_at", "at"),  # the retention purge
)

# -- calendar sync (gateway/sync) -------------------------------------------------------------
# No title, description, attendee or location column: only what availability and booking need
# (data minimisation). `details` holds them only when a deployment opts in or for events the
# gateway created.

calendars = Table(
    "calendars",
    metadata,
    Column("id", String(32), primary_key=True),  # "cal_" + 24 hex
    Column("integration_id", String(32), nullable=False),
    Column("tenant_id", String(64), nullable=False),
    Column("google_calendar_id", String(320), nullable=False),
    Column("time_zone", String(64), nullable=False),
    # Google's nextSyncToken: not a credential (useless without the user's access token).
    Column("sync_token", Text, nullable=True),
    # The generation readers see; NULL until the first full sync completed.
    Column("active_generation", Integer, nullable=True),
    # initial | synced | backoff | error
    Column("state", String(16), nullable=False),
    Column("last_success_at", DateTime(timezone=True), nullable=True),
    Column("last_attempt_at", DateTime(timezone=True), nullable=True),
    Column("last_error", String(64), nullable=True),  # an error code, never a message
    # The window busy blocks were materialised for.
    Column("horizon_start", DateTime(timezone=True), nullable=True),
    Column("horizon_end", DateTime(timezone=True), nullable=True),
    # For the scheduler (later part): push/poll requests, leases across processes, backoff.
    Column("sync_requested_at", DateTime(timezone=True), nullable=True),
    Column("next_poll_at", DateTime(timezone=True), nullable=True),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", DateTime(timezone=True), nullable=True),
    Column("backoff_until", DateTime(timezone=True), nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # Incremented with every change of its busy blocks or freshness (gateway.db.notify).
    Column("version", Integer, nullable=False, server_default="0"),
    # The version of the last change of its busy blocks (a freshness change leaves it): the
    # availability index reuses block arrays read at this blocks_version.
    Column("blocks_version", Integer, nullable=False, server_default="0"),
    # Why no push channel could be opened (`push_refused: webhookUrlNotHttps`), until one opens.
    Column("push_error", String(80), nullable=True),
    Index("ix_calendars_integration_google", "integration_id", "google_calendar_id", unique=True),
    Index("ix_calendars_next_poll_at", "next_poll_at"),
    # The scheduler's due scan (gateway.sync.lease_store) reads each reason to be due through
    # an index, so a scan costs what is due, not every calendar: the two below are partial
    # (few rows: requests wait for one claim, a calendar is uncopied until its first full sync).
    Index(
        "ix_calendars_sync_requested",
        "sync_requested_at",
        sqlite_where=text("sync_requested_at IS NOT NULL"),
        postgresql_where=text("sync_requested_at IS NOT NULL"),
    ),
    Index(
        "ix_calendars_uncopied",
        "id",
        sqlite_where=text("active_generation IS NULL"),
        postgresql_where=text("active_generation IS NULL"),
    ),
)

calendar_events = Table(
    "calendar_events",
    metadata,
    Column("calendar_id", String(32), primary_key=True),
    Column("generation", Integer, primary_key=True),
    Column("event_id", String(1024), primary_key=True),
    Column("status", String(16), nullable=False),  # confirmed | tentative | cancelled
    Column("transparency", String(16), nullable=False),  # opaque | transparent
    Column("self_declined", Boolean, nullable=False),
    Column("event_type", String(32), nullable=False),
    Column("all_day", Boolean, nullable=False),
    Column("start_at", DateTime(timezone=True), nullable=True),  # UTC, timed events
    Column("end_at", DateTime(timezone=True), nullable=True),
    Column("start_date", String(10), nullable=True),  # YYYY-MM-DD, all-day events
    Column("end_date", String(10), nullable=True),  # exclusive
    Column("time_zone", String(64), nullable=True),  # zone of the series' wall times
    Column("recurrence", Text, nullable=True),  # JSON list of RRULE/EXDATE/RDATE lines
    Column("recurring_event_id", String(1024), nullable=True),
    Column("original_start", String(16), nullable=True),  # occurrence key it replaces
    Column("etag", String(64), nullable=True),
    Column("updated", String(40), nullable=True),  # Google's RFC 3339 `updated`
    Column("created_by_gateway", Boolean, nullable=False),
    Column("details", Text, nullable=True),  # JSON; only opted in or gateway-created
    # The exceptions of a series. Partial: most records are no exception, and an entry for
    # each of them cost a calendar's first copy ~15% of its events' INSERT (migration 0016).
    Index(
        "ix_calendar_events_series",
        "calendar_id",
        "generation",
        "recurring_event_id",
        sqlite_where=text("recurring_event_id IS NOT NULL"),
        postgresql_where=text("recurring_event_id IS NOT NULL"),
    ),
)

# Written a calendar at a time (thousands of rows per sync) and read by range or whole: the
# times are epoch seconds, and on SQLite the rows live in the primary key's B-tree (WITHOUT
# ROWID), ordered by start, which is also the range index (migration 0013).
busy_blocks = Table(
    "busy_blocks",
    metadata,
    Column("calendar_id", String(32), nullable=False),
    Column("generation", Integer, nullable=False),
    Column("event_id", String(1024), nullable=False),
    Column("start_at", EpochSeconds(), nullable=False),  # floored
    Column("end_at", EpochSeconds(), nullable=False),  # ceiled
    # The series (recurring master, or the event itself) whose recomputation replaces it.
    Column("series_id", String(1024), nullable=False),
    PrimaryKeyConstraint("calendar_id", "generation", "start_at", "event_id"),
    Index("ix_busy_blocks_series", "calendar_id", "generation", "series_id"),
    sqlite_with_rowid=False,
)

# -- push channels (gateway/sync) ---------------------------------------------------------------

watch_channels = Table(
    "watch_channels",
    metadata,
    # The channel id we chose (random, non-personal) and sent to events.watch.
    Column("id", String(64), primary_key=True),
    Column("calendar_id", String(32), nullable=False),
    Column("integration_id", String(32), nullable=False),
    # Google's id of the watched resource (needed for channels.stop); NULL until watch answered.
    Column("resource_id", String(255), nullable=True),
    # SHA-256 of the per-channel secret sent as the channel token: the secret is never stored.
    Column("token_sha256", LargeBinary(32), nullable=False),
    # opening | active | stopping | stopped
    Column("state", String(16), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_message_at", DateTime(timezone=True), nullable=True),
    # Highest X-Goog-Message-Number seen: older or repeated notifications do no work.
    Column("last_message_number", Integer, nullable=True),
    Index("ix_watch_channels_calendar", "calendar_id"),
    Index("ix_watch_channels_integration", "integration_id"),
)

# -- booking (gateway/booking) ------------------------------------------------------------------

bookings = Table(
    "bookings",
    metadata,
    # One row per Idempotency-Key, per tenant and integration.
    Column("tenant_id", String(64), primary_key=True),
    Column("integration_id", String(32), primary_key=True),
    Column("idempotency_key", String(255), primary_key=True),
    # Derived from (tenant, integration, key) in base32hex: what a retry re-sends to Google.
    Column("google_event_id", String(64), nullable=False),
    Column("google_calendar_id", String(320), nullable=False),
    # SHA-256 of the canonical request body: the same key with another body is refused.
    Column("body_sha256", String(64), nullable=False),
    # pending (sent or about to be sent to Google) | created | rejected
    Column("state", String(16), nullable=False),
    # The 201 answer as JSON (ids, times, etag, link): replayed for a repeated request.
    Column("response", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_bookings_event", "integration_id", "google_event_id"),
)

# -- destruction receipts (gateway/connections/receipts.py) --------------------------------------

disconnect_receipts = Table(
    "disconnect_receipts",
    metadata,
    # Kept after everything else about the integration is gone: the user's proof, and ours.
    Column("receipt_id", String(32), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("integration_id", String(32), nullable=False, unique=True),
    Column("key_id", String(32), nullable=False),  # the signing key
    Column("completed_at", DateTime(timezone=True), nullable=False),
    # The signed document ({"receipt", "signature"}), exactly as handed out: no secret.
    Column("document", Text, nullable=False),
    # The seq of the disconnect's deletion journal entry: a journal ending before it is an
    # older copy put back (gateway/connections/journal.py).
    Column("journal_seq", Integer, nullable=True),
)

# -- outbound webhooks (gateway/webhooks) -------------------------------------------------------

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(32), primary_key=True),  # "whe_" + 24 hex
    Column("tenant_id", String(64), nullable=False),
    Column("url", Text, nullable=False),
    Column("description", String(200), nullable=True),
    Column("events", String(400), nullable=False),  # space separated event types
    # The signing secret, sealed by the vault under the endpoint's own data key (the secret is
    # symmetric: the gateway must be able to sign with it, so it cannot be a one-way hash).
    Column("secret", LargeBinary, nullable=False),
    # After a rotation the previous secret keeps signing alongside until `previous_until`.
    Column("previous_secret", LargeBinary, nullable=True),
    Column("previous_until", DateTime(timezone=True), nullable=True),
    # enabled | disabled
    Column("state", String(16), nullable=False),
    Column("disabled_reason", String(64), nullable=True),  # gone | failing | by_request
    # Since when every attempt failed (NULL after any success): 5 days of it disables.
    Column("failing_since", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_webhook_endpoints_tenant", "tenant_id"),
)

webhook_events = Table(
    "webhook_events",
    metadata,
    Column("id", String(40), primary_key=True),  # "msg_" + 32 hex: the `webhook-id`
    Column("tenant_id", String(64), nullable=False),
    Column("integration_id", String(32), nullable=True),
    Column("type", String(64), nullable=False),
    Column("body", Text, nullable=False),  # the exact JSON body sent (ids, codes and times)
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_webhook_events_tenant_created", "tenant_id", "created_at"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(32), primary_key=True),  # "whd_" + 24 hex
    Column("event_id", String(40), nullable=False),
    Column("endpoint_id", String(32), nullable=False),
    Column("tenant_id", String(64), nullable=False),
    # pending | delivered | failed (gave up after the retry period, or the endpoint said 410)
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime(timezone=True), nullable=True),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", DateTime(timezone=True), nullable=True),
    Column("last_attempt_at", DateTime(timezone=True), nullable=True),
    Column("last_status", Integer, nullable=True),  # HTTP status of the last answer
    Column("last_error", String(64), nullable=True),  # a code: timeout, refused_address, ...
    Column("last_latency_ms", Integer, nullable=True),
    Column("last_response", Text, nullable=True),  # at most 1 KiB of the answer's body
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
    Index("ix_webhook_deliveries_endpoint", "endpoint_id", "created_at"),
)
