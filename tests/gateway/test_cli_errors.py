"""The CLI stops with one clear line and a non-zero status on bad configuration."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from gateway.db.migrate import head_revision
from tests.support.cli import run_cli


def test_unknown_database_scheme_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli("migrate", cwd=tmp_path, env={"GATEWAY_DATABASE_URL": "mysql://x@y/z"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "calendar-gateway: error: GATEWAY_DATABASE_URL: unknown scheme 'mysql'; "
        "use sqlite+aiosqlite:// or postgresql+asyncpg://"
    ]
    assert not (tmp_path / "var").exists()


def test_serve_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    result = run_cli("serve", "--port", "0", cwd=tmp_path)
    assert result.returncode == 1
    assert "calendar-gateway migrate" in result.stderr
    assert "Traceback" not in result.stderr


def test_migrate_creates_the_embedded_database_and_is_idempotent(tmp_path: Path) -> None:
    first = run_cli("migrate", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "migrated" in first.stdout
    assert (tmp_path / "var" / "gateway.db").exists()
    second = run_cli("migrate", cwd=tmp_path)
    assert second.returncode == 0
    assert "up to date" in second.stdout


def test_unreachable_postgres_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli(
        "migrate",
        cwd=tmp_path,
        env={"GATEWAY_DATABASE_URL": "postgresql://nobody:s3cret-pw@127.0.0.1:1/none"},
    )
    assert result.returncode == 1
    assert result.stderr.startswith("calendar-gateway: error: cannot reach the database")
    assert "s3cret-pw" not in result.stderr
    assert "Traceback" not in result.stderr


def test_embedded_database_and_its_folder_are_private(tmp_path: Path) -> None:
    result = run_cli("migrate", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "var").stat().st_mode & 0o777 == 0o700
    for name in ("gateway.db", "gateway.db-wal"):
        file = tmp_path / "var" / name
        if file.exists():
            assert file.stat().st_mode & 0o077 == 0, f"{name} is readable by others"


def test_debug_logging_never_echoes_sql_parameters(tmp_path: Path) -> None:
    """At GATEWAY_LOG_LEVEL=DEBUG the drivers' statement logs (with their parameters: sealed
    blobs, PKCE verifiers, key hashes) stay off."""
    assert run_cli("migrate", cwd=tmp_path).returncode == 0
    result = run_cli(
        "api-keys",
        "create",
        "--tenant",
        "acme",
        "--scopes",
        "calendar:read",
        cwd=tmp_path,
        env={"GATEWAY_LOG_LEVEL": "DEBUG"},
    )
    assert result.returncode == 0, result.stderr
    assert "INSERT INTO api_keys" not in result.stderr
    assert "sqlalchemy.engine" not in result.stderr
    assert "aiosqlite" not in result.stderr


def test_an_env_file_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    result = run_cli("--env-file", "missing.env", "migrate", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "calendar-gateway: error: --env-file missing.env: no such file"
    assert not (tmp_path / "var").exists()


def test_a_misspelt_setting_is_named_with_the_closest_valid_one(tmp_path: Path) -> None:
    (tmp_path / "local.env").write_text("GATEWAY_PUBLIK_URL=https://gw.example.com\n")
    result = run_cli(
        "--env-file",
        "local.env",
        "migrate",
        cwd=tmp_path,
        env={"GATEWAY_DATABSE_URL": "sqlite+aiosqlite:///./elsewhere.db"},
    )
    assert result.returncode == 0, result.stderr
    warnings = result.stderr.strip().splitlines()
    assert warnings == [
        "calendar-gateway: warning: GATEWAY_DATABSE_URL is not a setting and is ignored "
        "(did you mean GATEWAY_DATABASE_URL?)",
        "calendar-gateway: warning: GATEWAY_PUBLIK_URL is not a setting and is ignored "
        "(did you mean GATEWAY_PUBLIC_URL?)",
    ]
    assert (tmp_path / "var" / "gateway.db").exists()  # the default applied, as warned


def test_the_emulator_help_names_the_command_it_is_run_as(tmp_path: Path) -> None:
    result = run_cli("emulator", "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: calendar-gateway emulator")


def test_serve_migrate_says_what_it_migrated_and_that_it_created_the_key_ring(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "GOOGLE_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--migrate", "--port", "0"],
        cwd=tmp_path,
        env={**env, "COLUMNS": "200", "GATEWAY_LOG_LEVEL": "WARNING"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    try:
        lines = []
        for line in process.stdout:  # blocks until the gateway prints; no timing involved
            lines.append(line.strip())
            if "listening on" in line:
                break
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert lines[0] == "migrated sqlite+aiosqlite:///./var/gateway.db from empty to revision " + (
        head_revision() or ""
    )
    assert lines[1] == "created key ring ./var/keyring.json; back it up apart from the database"
    assert (tmp_path / "var" / "keyring.json").exists()
