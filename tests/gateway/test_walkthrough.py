"""The README's "Trying it with the emulator" works as written: its `.env` block and its shell
block are taken from the README itself (so the two cannot drift) and run with bash in a fresh
folder, push, availability, booking, MCP and disconnect included.

Only the ports change: 8080 and 8085 may be taken on a shared machine or by another test worker,
so the blocks' port numbers are replaced by free ones, the gateway is told its port through the
environment, and the emulator registers the gateway's callback on that port. A reader's run
differs in nothing else. The shell waits for readiness itself (curl --retry, `until` loops);
`timeout` only ends a run that hangs, it measures nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.stack import free_port

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "### Trying it with the emulator"
HANG_S = 240


def walkthrough() -> tuple[str, str]:
    """The section's `.env` block and its shell block, as the README has them."""
    text = README.read_text()
    section = text.split(SECTION, 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(blocks) == 2, "the section has the .env block and the commands"
    return blocks[0], blocks[1]


def _json_lines(out: str) -> list[Any]:
    found = []
    for line in out.splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


def _tool_result(answer: dict[str, Any]) -> Any:
    result = answer["result"]
    assert result["isError"] is False, result
    return json.loads(result["content"][0]["text"])


def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    env_block, commands = walkthrough()
    google, gateway = free_port(), free_port()
    env_block = env_block.replace("8085", str(google)).replace("8080", str(gateway))
    commands = commands.replace("8085", str(google)).replace("8080", str(gateway))
    callback = f"http://127.0.0.1:{gateway}/oauth/google/callback"
    commands = commands.replace(
        "calendar-gateway emulator ", f"calendar-gateway emulator --redirect-uri {callback} ", 1
    )
    (tmp_path / ".env").write_text(env_block)
    # The reader's `.venv/bin/calendar-gateway`: this interpreter's.
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "calendar-gateway").symlink_to(
        Path(sys.executable).parent / "calendar-gateway"
    )
    script = tmp_path / "walkthrough.sh"
    script.write_text(commands)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GATEWAY_", "GOOGLE_", "CALENDAR_GATEWAY_"))
    }
    env.update(GATEWAY_PORT=str(gateway), GATEWAY_PUBLIC_URL=f"http://127.0.0.1:{gateway}")
    process = subprocess.Popen(
        ["bash", "-e", str(script)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its background jobs too: ended with the group below
    )
    try:
        out, err = process.communicate(timeout=HANG_S)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, f"{out[-3000:]}\n---\n{err[-3000:]}"

    integration_id = re.search(r"^(int_\w+)$", out, re.M)
    assert integration_id is not None, out
    answers = _json_lines(out)
    integration, freebusy, slots, booked = answers[:4]
    assert integration["id"] == integration_id.group(1)
    assert integration["status"] == "active"
    assert integration["sync"]["calendars"][0]["push"] == "active"
    # The change made at Google was pushed: the local copy shows it.
    assert freebusy["source"] == "cache"
    # On a day nothing was seeded on: exactly the event made at Google.
    assert [(b["start"][10:], b["end"][10:]) for b in freebusy["busy"]] == [
        ("T14:00:00Z", "T15:00:00Z")
    ], freebusy
    assert slots["slots"][0]["start"].endswith("T08:00:00Z"), slots
    assert booked["status"] == "confirmed" and booked["start"].endswith("T08:00:00Z")
    connections, found, mcp_booked, meetings = (_tool_result(a) for a in answers[4:8])
    assert [c["id"] for c in connections["connections"]] == [integration["id"]]
    # The booked half hour is busy now; times also in the call's zone, with the offset.
    assert found["slots"][0]["start"].endswith("T08:30:00Z"), found
    assert re.search(r"T\d\d:30:00\+0[12]:00$", found["slots"][0]["start_local"]), found
    assert mcp_booked["event"]["start"].endswith("T09:00:00Z")
    assert sorted(m["summary"] for m in meetings["meetings"]) == ["Demo", "Intro call"]
    disconnected = answers[8]
    assert disconnected["status"] == "disconnected" and disconnected["tokens_destroyed"] is True
