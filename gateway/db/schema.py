"""The gateway's tables, on one MetaData that Alembic migrations are written against.

Tables owned by the vault are defined by the vault (which must not import the gateway) and
attached here.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

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
)
