"""Typed settings, read from the environment and an optional `.env` file.

Every variable is documented in `.env.example`. `load_settings()` turns any validation failure into
one `ConfigurationError` line naming the variable; values of secret settings are never echoed.
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from gateway.errors import ConfigurationError
from vault.providers import keyring_path

# Accepted DATABASE_URL schemes, and the plain spellings we translate to their async drivers so a
# user pasting a libpq-style URL is not punished for it.
_DB_SCHEMES = {
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "sqlite": "sqlite+aiosqlite",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}

_KEK_SCHEMES = ("file", "pkcs11", "aws-kms")

# Least privilege: sign-in scopes, free/busy of events (availability and change watching), and
# the events this app creates (booking). Nothing that reads titles or other people's events.
AVAILABILITY_SCOPE = "https://www.googleapis.com/auth/calendar.events.freebusy"
BOOKING_SCOPE = "https://www.googleapis.com/auth/calendar.events.owned"
DEFAULT_GOOGLE_SCOPES = ("openid", "email", AVAILABILITY_SCOPE, BOOKING_SCOPE)


def _http_url(value: str, problem: str) -> str:
    """`value` if it is an absolute http(s) URL, else ValueError(problem)."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(problem)
    return value


def normalise_database_url(url: str) -> str:
    """Return `url` with its scheme mapped to the async driver we use, or raise ValueError."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("must be a URL such as sqlite+aiosqlite:///./var/gateway.db")
    target = _DB_SCHEMES.get(scheme.lower())
    if target is None:
        raise ValueError(
            f"unknown scheme {scheme!r}; use sqlite+aiosqlite:// or postgresql+asyncpg://"
        )
    return f"{target}://{rest}"


class Settings(BaseSettings):
    """All of the gateway's configuration. Field aliases are the environment variable names."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        frozen=True,
    )

    database_url: str = Field(
        default="sqlite+aiosqlite:///./var/gateway.db",
        validation_alias=AliasChoices("GATEWAY_DATABASE_URL"),
    )
    # Connections each process keeps open; None: the backend's default (gateway.db.engine).
    database_pool_size: int | None = Field(
        default=None,
        ge=1,
        le=500,
        validation_alias=AliasChoices("GATEWAY_DATABASE_POOL_SIZE"),
    )
    kek_uri: str = Field(
        default="file:./var/keyring.json",
        validation_alias=AliasChoices("GATEWAY_KEK_URI"),
    )
    pkcs11_pin: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("GATEWAY_PKCS11_PIN")
    )
    dek_cache_size: int = Field(
        default=10_000, ge=0, validation_alias=AliasChoices("GATEWAY_DEK_CACHE_SIZE")
    )
    dek_cache_ttl_s: float = Field(
        default=300.0, ge=0, validation_alias=AliasChoices("GATEWAY_DEK_CACHE_TTL_S")
    )
    # The deletion journal (a file outside the database; empty: deletion-journal.jsonl beside
    # the keyring, or ./var/ for HSM and KMS deployments). The trust keys file lives beside it.
    deletion_journal: str = Field(
        default="", validation_alias=AliasChoices("GATEWAY_DELETION_JOURNAL")
    )
    kek_retire_grace_s: float = Field(
        default=60.0, ge=0, validation_alias=AliasChoices("GATEWAY_KEK_RETIRE_GRACE_S")
    )
    host: str = Field(default="127.0.0.1", validation_alias=AliasChoices("GATEWAY_HOST"))
    port: int = Field(default=8080, ge=0, le=65535, validation_alias=AliasChoices("GATEWAY_PORT"))
    public_url: str = Field(
        default="http://127.0.0.1:8080", validation_alias=AliasChoices("GATEWAY_PUBLIC_URL")
    )
    # How long a stop (SIGTERM, Ctrl-C) waits for the requests in flight before it cuts them:
    # above the longest a request should take (a live Google call gives up after 20 s), below
    # an orchestrator's grace period (Kubernetes: 30 s), which also has to cover handing back
    # the leases afterwards. aiohttp's own default, 60 s, outlived that grace period.
    shutdown_timeout_s: float = Field(
        default=25, gt=0, le=600, validation_alias=AliasChoices("GATEWAY_SHUTDOWN_TIMEOUT_S")
    )
    log_level: str = Field(default="INFO", validation_alias=AliasChoices("GATEWAY_LOG_LEVEL"))
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto", validation_alias=AliasChoices("GATEWAY_LOG_FORMAT")
    )
    allowed_return_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=AliasChoices("GATEWAY_ALLOWED_RETURN_URLS")
    )
    connect_session_ttl_s: int = Field(
        default=600, ge=60, le=3600, validation_alias=AliasChoices("GATEWAY_CONNECT_SESSION_TTL_S")
    )
    audit_retention_days: int = Field(
        default=400, ge=1, le=36_500, validation_alias=AliasChoices("GATEWAY_AUDIT_RETENTION_DAYS")
    )
    token_refresh_margin_s: int = Field(
        default=300, ge=0, le=3000, validation_alias=AliasChoices("GATEWAY_TOKEN_REFRESH_MARGIN_S")
    )

    sync_horizon_past_days: int = Field(
        default=30, ge=0, le=365, validation_alias=AliasChoices("GATEWAY_SYNC_HORIZON_PAST_DAYS")
    )
    sync_horizon_future_days: int = Field(
        default=365,
        ge=1,
        le=1095,
        validation_alias=AliasChoices("GATEWAY_SYNC_HORIZON_FUTURE_DAYS"),
    )
    sync_worker: bool = Field(default=True, validation_alias=AliasChoices("GATEWAY_SYNC_WORKER"))
    sync_tick_s: float = Field(
        default=1.0, gt=0, le=60, validation_alias=AliasChoices("GATEWAY_SYNC_TICK_S")
    )
    sync_poll_interval_s: int = Field(
        default=300, ge=1, le=86400, validation_alias=AliasChoices("GATEWAY_SYNC_POLL_INTERVAL_S")
    )
    sync_lease_s: float = Field(
        default=120, ge=0.5, le=3600, validation_alias=AliasChoices("GATEWAY_SYNC_LEASE_S")
    )
    sync_concurrency: int = Field(
        default=8, ge=1, le=256, validation_alias=AliasChoices("GATEWAY_SYNC_CONCURRENCY")
    )
    sync_backoff_base_s: float = Field(
        default=2.0, gt=0, le=600, validation_alias=AliasChoices("GATEWAY_SYNC_BACKOFF_BASE_S")
    )
    sync_backoff_max_s: float = Field(
        default=900, gt=0, le=86400, validation_alias=AliasChoices("GATEWAY_SYNC_BACKOFF_MAX_S")
    )
    tentative_is_busy: bool = Field(
        default=True, validation_alias=AliasChoices("GATEWAY_TENTATIVE_IS_BUSY")
    )
    store_event_details: bool = Field(
        default=False, validation_alias=AliasChoices("GATEWAY_STORE_EVENT_DETAILS")
    )

    freebusy_max_staleness_s: int = Field(
        default=600,
        ge=0,
        le=86_400,
        validation_alias=AliasChoices("GATEWAY_FREEBUSY_MAX_STALENESS_S"),
    )
    freebusy_concurrency: int = Field(
        default=8, ge=1, le=64, validation_alias=AliasChoices("GATEWAY_FREEBUSY_CONCURRENCY")
    )
    # Live Google calls (free/busy the copy cannot answer, booking calls) per minute, per API
    # key and per tenant; a bucket holds one minute's allowance (gateway.livecalls).
    live_calls_per_min_per_key: int = Field(
        default=120,
        ge=1,
        le=100_000,
        validation_alias=AliasChoices("GATEWAY_LIVE_CALLS_PER_MIN_PER_KEY"),
    )
    live_calls_per_min_per_tenant: int = Field(
        default=600,
        ge=1,
        le=1_000_000,
        validation_alias=AliasChoices("GATEWAY_LIVE_CALLS_PER_MIN_PER_TENANT"),
    )
    # How long a live free/busy answer serves the same question again (0: only questions asked
    # while it is in flight share it).
    live_answer_reuse_s: int = Field(
        default=5, ge=0, le=60, validation_alias=AliasChoices("GATEWAY_LIVE_ANSWER_REUSE_S")
    )
    # Memory for the in-process availability index (busy blocks and freshness per calendar,
    # least recently used dropped first); 0 turns the index off (every answer reads the database).
    index_memory_mb: int = Field(
        default=256, ge=0, le=65_536, validation_alias=AliasChoices("GATEWAY_INDEX_MEMORY_MB")
    )
    # How old the busy time an if_free booking is checked against may be; older is asked of
    # Google first. Small: a booking is where a stale answer turns into a double booking.
    booking_max_staleness_s: int = Field(
        default=30,
        ge=0,
        le=3600,
        validation_alias=AliasChoices("GATEWAY_BOOKING_MAX_STALENESS_S"),
    )
    push_enabled: bool = Field(default=True, validation_alias=AliasChoices("GATEWAY_PUSH_ENABLED"))
    push_renew_before_s: int = Field(
        default=86_400,
        ge=60,
        le=518_400,
        validation_alias=AliasChoices("GATEWAY_PUSH_RENEW_BEFORE_S"),
    )
    push_silence_threshold_s: int = Field(
        default=120,
        ge=5,
        le=86_400,
        validation_alias=AliasChoices("GATEWAY_PUSH_SILENCE_THRESHOLD_S"),
    )
    # With push, the copy counts as current for this long after the last notification or
    # successful sync (a channel can go silent without a word); pushed calendars are polled at
    # this interval too, so a dead channel costs at most this much staleness.
    push_trust_s: int = Field(
        default=900, ge=5, le=86_400, validation_alias=AliasChoices("GATEWAY_PUSH_TRUST_S")
    )
    push_maintenance_interval_s: float = Field(
        default=60.0,
        ge=0,
        le=3600,
        validation_alias=AliasChoices("GATEWAY_PUSH_MAINTENANCE_INTERVAL_S"),
    )
    webhook_worker: bool = Field(
        default=True, validation_alias=AliasChoices("GATEWAY_WEBHOOK_WORKER")
    )
    webhook_tick_s: float = Field(
        default=0.5, gt=0, le=60, validation_alias=AliasChoices("GATEWAY_WEBHOOK_TICK_S")
    )
    webhook_lease_s: float = Field(
        default=60, gt=1, le=3600, validation_alias=AliasChoices("GATEWAY_WEBHOOK_LEASE_S")
    )
    webhook_timeout_s: float = Field(
        default=15, gt=0, le=60, validation_alias=AliasChoices("GATEWAY_WEBHOOK_TIMEOUT_S")
    )
    webhook_allow_insecure_loopback: bool = Field(
        default=False, validation_alias=AliasChoices("GATEWAY_WEBHOOK_ALLOW_INSECURE_LOOPBACK")
    )
    webhook_allowed_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=AliasChoices("GATEWAY_WEBHOOK_ALLOWED_NETWORKS")
    )
    webhook_availability_coalesce_s: float = Field(
        default=30,
        ge=0,
        le=3600,
        validation_alias=AliasChoices("GATEWAY_WEBHOOK_AVAILABILITY_COALESCE_S"),
    )
    # Events (and their delivery records) older than this with nothing left to deliver are
    # deleted; more than the 3 days of retries, so nothing pending is ever lost.
    webhook_retention_days: int = Field(
        default=7, ge=4, le=3650, validation_alias=AliasChoices("GATEWAY_WEBHOOK_RETENTION_DAYS")
    )

    google_client_id: str | None = Field(
        default=None, validation_alias=AliasChoices("GOOGLE_CLIENT_ID")
    )
    google_client_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("GOOGLE_CLIENT_SECRET")
    )
    google_auth_uri: str = Field(
        default="https://accounts.google.com/o/oauth2/v2/auth",
        validation_alias=AliasChoices("GOOGLE_AUTH_URI"),
    )
    google_token_uri: str = Field(
        default="https://oauth2.googleapis.com/token",
        validation_alias=AliasChoices("GOOGLE_TOKEN_URI"),
    )
    google_revoke_uri: str = Field(
        default="https://oauth2.googleapis.com/revoke",
        validation_alias=AliasChoices("GOOGLE_REVOKE_URI"),
    )
    google_certs_uri: str = Field(
        default="https://www.googleapis.com/oauth2/v1/certs",
        validation_alias=AliasChoices("GOOGLE_CERTS_URI"),
    )
    google_scopes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_GOOGLE_SCOPES),
        validation_alias=AliasChoices("GOOGLE_SCOPES"),
    )
    google_calendar_api_url: str = Field(
        default="https://www.googleapis.com/calendar/v3/",
        validation_alias=AliasChoices("GOOGLE_CALENDAR_API_URL"),
    )

    @field_validator(
        "allowed_return_urls", "google_scopes", "webhook_allowed_networks", mode="before"
    )
    @classmethod
    def _split_list(cls, value: object) -> object:
        # Environment values are comma (or space) separated; JSON lists are accepted too.
        if isinstance(value, str):
            return [part for part in value.replace(",", " ").split() if part]
        return value

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"{network!r} is not a network such as 10.0.0.0/8") from None
        return value

    @field_validator("allowed_return_urls")
    @classmethod
    def _check_return_urls(cls, value: list[str]) -> list[str]:
        return [_http_url(url, f"{url!r} is not an absolute http(s) URL prefix") for url in value]

    @field_validator(
        "google_auth_uri",
        "google_token_uri",
        "google_revoke_uri",
        "google_certs_uri",
        "google_calendar_api_url",
    )
    @classmethod
    def _check_google_url(cls, value: str) -> str:
        return _http_url(value, "must be an absolute http(s) URL")

    @field_validator("google_scopes")
    @classmethod
    def _check_scopes(cls, value: list[str]) -> list[str]:
        if AVAILABILITY_SCOPE not in value:
            raise ValueError(f"must include {AVAILABILITY_SCOPE} (availability needs it)")
        return value

    @property
    def deletion_journal_path(self) -> Path:
        """Where the deletion journal is: GATEWAY_DELETION_JOURNAL, else beside the keyring
        (a file: KEK) or in ./var/."""
        if self.deletion_journal:
            return Path(self.deletion_journal)
        keyring = keyring_path(self.kek_uri)
        directory = Path(keyring).parent if keyring is not None else Path("var")
        return directory / "deletion-journal.jsonl"

    @property
    def trust_keys_path(self) -> Path:
        """The trust keys file (receipt signing, journal MAC): beside the deletion journal."""
        return self.deletion_journal_path.with_name("trust-keys.json")

    @property
    def google_configured(self) -> bool:
        """Whether users can connect (a Google OAuth client is configured)."""
        return bool(self.google_client_id and self.google_client_secret)

    @property
    def oauth_redirect_uri(self) -> str:
        """Where Google sends the user's browser back to: derived from GATEWAY_PUBLIC_URL."""
        return f"{self.public_url}/oauth/google/callback"

    @property
    def push_webhook_url(self) -> str:
        """Where Google delivers push notifications: derived from GATEWAY_PUBLIC_URL."""
        return f"{self.public_url}/webhooks/google/calendar"

    @property
    def push_address_usable(self) -> bool:
        """Whether Google (or, for http on a loopback host, the local emulator) accepts
        GATEWAY_PUBLIC_URL as a webhook address: Google refuses every other http address."""
        parts = urlsplit(self.public_url)
        return parts.scheme == "https" or (
            parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")
        )

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        return normalise_database_url(value)

    @field_validator("kek_uri")
    @classmethod
    def _check_kek_uri(cls, value: str) -> str:
        scheme = value.split(":", 1)[0].lower()
        if ":" not in value or scheme not in _KEK_SCHEMES:
            raise ValueError(
                "must start with file:, pkcs11: or aws-kms: (see .env.example for the forms)"
            )
        return value

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str) -> str:
        return _http_url(
            value, "must be an absolute http(s) URL such as https://gateway.example.com"
        ).rstrip("/")

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return level

    def __repr_args__(self) -> Any:
        # SecretStr already masks itself; the database URL may carry a password, so mask it too.
        for name, value in super().__repr_args__():
            if name == "database_url" and isinstance(value, str):
                value = redact_url_password(value)
            yield name, value


def redact_url_password(url: str) -> str:
    """Replace the password of a URL's userinfo with `***` (for logs and reprs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


# Environment variable name of each field, for error messages.
_ENV_NAMES = {
    name: str(field.validation_alias.choices[0])  # type: ignore[union-attr]
    for name, field in Settings.model_fields.items()
}


# GATEWAY_* variables that are not settings but are read by someone else on purpose: the test
# harness (tests/support/services.py) and `calendar-gateway bench` (gateway/bench/setup.py).
OTHER_GATEWAY_VARIABLES = frozenset(
    {
        "GATEWAY_TEST_POSTGRES_URL",
        "GATEWAY_TEST_SOFTHSM_LIB",
        "GATEWAY_BENCH_POSTGRES_URL",
        "GATEWAY_BENCH_PROFILE_DIR",
    }
)


def unknown_variables(names: Iterable[str]) -> list[str]:
    """A warning for each GATEWAY_* name that no setting reads (a typo is otherwise silently
    ignored and the default applies), naming the closest valid one."""
    valid = sorted(set(_ENV_NAMES.values()))
    warnings = []
    for name in sorted(set(names)):
        if not name.startswith("GATEWAY_") or name in _ENV_NAMES.values():
            continue
        if name in OTHER_GATEWAY_VARIABLES:
            continue
        close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        warnings.append(f"{name} is not a setting and is ignored{hint}")
    return warnings


def load_settings(env_file: Path | str | None = ".env", **overrides: Any) -> Settings:
    """Build Settings, turning validation errors into one line that names the variable."""
    try:
        return Settings(_env_file=env_file, **overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        var = _ENV_NAMES.get(field, field)
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigurationError(f"{var}: {message}") from None
    except SettingsError as exc:
        # Raised before validation (e.g. an unreadable .env); its text names the field.
        raise ConfigurationError(str(exc).splitlines()[0]) from None
