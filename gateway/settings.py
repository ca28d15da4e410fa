"""Typed settings, read from the environment and an optional `.env` file.

Every variable is documented in `.env.example`. `load_settings()` turns any validation failure into
one `ConfigurationError` line naming the variable; values of secret settings are never echoed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.errors import ConfigurationError

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
    kek_retire_grace_s: float = Field(
        default=60.0, ge=0, validation_alias=AliasChoices("GATEWAY_KEK_RETIRE_GRACE_S")
    )
    host: str = Field(default="127.0.0.1", validation_alias=AliasChoices("GATEWAY_HOST"))
    port: int = Field(default=8080, ge=0, le=65535, validation_alias=AliasChoices("GATEWAY_PORT"))
    public_url: str = Field(
        default="http://127.0.0.1:8080", validation_alias=AliasChoices("GATEWAY_PUBLIC_URL")
    )
    log_level: str = Field(default="INFO", validation_alias=AliasChoices("GATEWAY_LOG_LEVEL"))

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
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL such as https://gateway.example.com")
        return value.rstrip("/")

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
