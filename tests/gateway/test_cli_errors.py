"""The CLI stops with one clear line and a non-zero status on bad configuration."""

from __future__ import annotations

from pathlib import Path

from tests.cli import run_cli


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
