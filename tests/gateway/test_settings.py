"""Settings: defaults, one clear line per bad value, and no secret in reprs."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigurationError
from gateway.settings import load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("GATEWAY_", "GOOGLE_")):
            monkeypatch.delenv(name)


def test_embedded_defaults_need_no_configuration() -> None:
    settings = load_settings(env_file=None)
    assert settings.database_url == "sqlite+aiosqlite:///./var/gateway.db"
    assert settings.kek_uri == "file:./var/keyring.json"
    assert settings.port == 8080


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("GATEWAY_PORT", "eighty", "GATEWAY_PORT"),
        ("GATEWAY_PORT", "70000", "GATEWAY_PORT"),
        ("GATEWAY_DATABASE_URL", "mysql://root@localhost/db", "unknown scheme 'mysql'"),
        ("GATEWAY_DATABASE_URL", "not a url", "GATEWAY_DATABASE_URL"),
        ("GATEWAY_KEK_URI", "vault://x", "GATEWAY_KEK_URI"),
        ("GATEWAY_PUBLIC_URL", "gateway.example.com", "GATEWAY_PUBLIC_URL"),
        ("GATEWAY_LOG_LEVEL", "chatty", "GATEWAY_LOG_LEVEL"),
        ("GATEWAY_DEK_CACHE_SIZE", "-1", "GATEWAY_DEK_CACHE_SIZE"),
        ("GATEWAY_SHUTDOWN_TIMEOUT_S", "0", "GATEWAY_SHUTDOWN_TIMEOUT_S"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as info:
        load_settings(env_file=None)
    message = str(info.value)
    assert expected in message
    assert message.startswith(variable)
    assert "\n" not in message


def test_libpq_style_urls_are_mapped_to_async_drivers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_DATABASE_URL", "postgresql://u@db:5432/gw")
    assert load_settings(env_file=None).database_url == "postgresql+asyncpg://u@db:5432/gw"


def test_secrets_never_appear_in_repr_or_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PKCS11_PIN", "pin-1234-secret")
    monkeypatch.setenv("GATEWAY_DATABASE_URL", "postgresql://gw:hunter2@db/gw")
    settings = load_settings(env_file=None)
    assert "pin-1234-secret" not in repr(settings)
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings)
    assert settings.pkcs11_pin is not None
    assert settings.pkcs11_pin.get_secret_value() == "pin-1234-secret"


def test_dotenv_file_is_read_and_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("GATEWAY_PORT=9001\nGATEWAY_HOST=0.0.0.0\n")
    monkeypatch.setenv("GATEWAY_HOST", "127.0.0.2")
    settings = load_settings(env_file=env_file)
    assert settings.port == 9001
    assert settings.host == "127.0.0.2"


def test_env_example_documents_every_setting() -> None:
    from gateway.settings import Settings

    example = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    documented = {
        line.lstrip("# ").split("=", 1)[0]
        for line in example.splitlines()
        if "=" in line and line.lstrip("# ").startswith(("GATEWAY_", "GOOGLE_"))
    }
    names = {str(f.validation_alias.choices[0]) for f in Settings.model_fields.values()}  # type: ignore[union-attr]
    assert names - documented == set(), "settings missing from .env.example"
    assert documented - names == set(), ".env.example documents settings that do not exist"
