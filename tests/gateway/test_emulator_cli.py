"""`calendar-gateway emulator` runs the Google emulator alone, as the README says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path


def _get(url: str, headers: dict[str, str] | None = None, data: bytes | None = None) -> object:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def test_emulator_command_serves_seeded_calendars(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "emulator", "--port", "0", "--seed-events", "50"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    try:
        # The banner's first line names the address it really listens on (port 0: the kernel
        # chose); it is printed once the socket listens, so no polling and no deadline.
        first = process.stdout.readline()
        assert first.startswith("Google emulator on http://127.0.0.1:"), first + (
            process.stdout.read() if process.poll() is not None else ""
        )
        base = first.split(" on ", 1)[1].strip()
        assert _get(f"{base}/_emulator/health") == {"ok": True}
        tokens = _get(
            f"{base}/_emulator/users/demo.rep@example.com/tokens",
            headers={"Content-Type": "application/json"},
            data=json.dumps(
                {"scopes": ["https://www.googleapis.com/auth/calendar.events.freebusy"]}
            ).encode(),
        )
        assert isinstance(tokens, dict)
        page = _get(
            f"{base}/calendar/v3/calendars/primary/events?maxResults=2500",
            headers={"Authorization": f"Bearer {tokens['access_token']}"},
        )
        assert isinstance(page, dict)
        assert page["kind"] == "calendar#events"
        assert len(page["items"]) >= 50
    finally:
        process.terminate()
        process.wait(timeout=10)
