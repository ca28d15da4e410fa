"""`calendar-gateway demo`: the README's first command, run as a newcomer would (no .env, no
GATEWAY_* settings), through the real CLI entry point in this process.

The demo starts the emulator and the gateway itself, so these tests need no fixture; each run
takes a few seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.demo import runner
from gateway.demo.runner import NEXT_TITLE, STEPS
from gateway.demo.seeding import SeedEvent

# The shapes of every token the emulator issues (see emulator/state.py `new_token`).
TOKEN_PREFIXES = (b"ya29.emu-", b"1//emu-")


def _database_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.glob("gateway.db*")))


def test_the_demo_walks_every_step_and_leaves_no_token_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A developer's configuration must not reach the demo: each of these would break it.
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("GATEWAY_SYNC_WORKER=false\nGATEWAY_PUSH_ENABLED=false\n")
    monkeypatch.setenv("GATEWAY_SYNC_WORKER", "false")
    monkeypatch.setenv("GOOGLE_CALENDAR_API_URL", "http://127.0.0.1:1/calendar/v3/")
    # Not a terminal and no width set, as when piped (pytest-xdist workers get COLUMNS=80).
    monkeypatch.delenv("COLUMNS", raising=False)
    folder = tmp_path / "demo"

    status = main(["demo", "--workdir", str(folder)])

    out, err = capsys.readouterr()
    assert status == 0, out + err
    for number, title in enumerate(STEPS, start=1):
        assert f"{number}. {title}" in out
    assert out.rstrip().splitlines()[-1].startswith("Demo complete in ")
    assert NEXT_TITLE in out.split(STEPS[-1])[1]
    assert "./scripts/run serve" in out
    # What the steps showed: the connection, the checked week, the push, the rotation.
    assert "status=connected&integration_id=int_" in out
    assert "matches the calendar" in out
    assert "Google -> POST /webhooks/google/calendar" in out
    assert "data key now wrapped by KEK version 2" in out
    # The booking and its replay: one event, and Google saw one insert.
    assert "Idempotent-Replayed" in out
    assert "Google created one event" in out
    # The scan's verdict, and our own scan of the kept folder: no token, no email.
    assert "nothing left" in out
    stored = _database_bytes(folder)
    assert stored, "the demo's database was not kept in --workdir"
    for prefix in TOKEN_PREFIXES:
        assert prefix not in stored
    assert b"demo.rep@example.com" not in stored
    # The gateway's log of the run (kept beside it) is redacted like any other.
    logged = (folder / "gateway.log").read_bytes()
    assert b"disconnect integration=" in logged
    for prefix in TOKEN_PREFIXES:
        assert prefix not in logged
    assert not (tmp_path / "var").exists()
    # Without a terminal the output is for logs and copying: ASCII, no trailing spaces, no URL
    # or id broken across lines, and each granted scope named once.
    assert out.isascii()
    assert [line for line in out.splitlines() if line != line.rstrip()] == []
    assert "login_hint=demo.rep@example.com" in out
    [scopes] = [line for line in out.splitlines() if "scopes granted" in line]
    names = scopes.split("scopes granted", 1)[1].strip().split(", ")
    assert len(names) == len(set(names)) and "userinfo.email" in names and "email" not in names


def test_a_failing_step_stops_the_demo_with_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The demo checks what it claims: an expectation the gateway (rightly) does not meet
    # stops it at the timeline, with a non-zero exit status and the reason.
    def wrong_week(monday: object, time_zone: str, owner: str) -> list[SeedEvent]:
        events = real_week(monday, time_zone, owner)  # type: ignore[arg-type]
        return [
            SeedEvent(**{**e.__dict__, "expect": "busy"}) if e.key == "declined" else e
            for e in events
        ]

    real_week = runner.work_week
    monkeypatch.setattr(runner, "work_week", wrong_week)

    status = main(["demo", "--workdir", str(tmp_path / "demo")])

    out, err = capsys.readouterr()
    assert status == 1
    assert "The demo stopped: availability disagrees with the calendar" in out
    assert "Vendor pitch should be busy" in err
    assert NEXT_TITLE not in out


def test_the_demo_refuses_a_folder_in_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "gateway.db").write_bytes(b"somebody's data")

    status = main(["demo", "--workdir", str(tmp_path)])

    assert status == 1
    assert "is not empty" in capsys.readouterr().err
    assert (tmp_path / "gateway.db").read_bytes() == b"somebody's data"
