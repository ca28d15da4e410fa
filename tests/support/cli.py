"""Running the real `calendar-gateway` command: in a subprocess, as a user would, or through its
entry point in this process."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from gateway.cli import main


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `python -m gateway ARGS` in `cwd` with a clean GATEWAY_* environment plus `env`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "GOOGLE_"))}
    base.update(env or {})
    base["COLUMNS"] = "200"  # rich wraps long lines at the terminal width
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=cwd,
        env=base,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def main_in_process(argv: list[str]) -> int:
    """Run `calendar-gateway ARGV` through its entry point in this process, then put the
    logging configuration back: `main()` sets up logging as in production, replacing the root
    logger's handlers with one bound to the sys.stderr of that moment (pytest's capture, closed
    after the test). Left in place, every later record, from any thread, would hit a closed
    stream ("Logging error ... I/O operation on closed file") instead of the suite's own
    handlers (the session-wide secret scan of tests/conftest.py among them)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return main(argv)
    finally:
        for added in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(added)
            added.close()
        for kept in handlers:
            if kept not in root.handlers:
                root.addHandler(kept)
        root.setLevel(level)


def status_rows(stdout: str) -> dict[int, tuple[str, int]]:
    """Parse `keys status` table rows: version -> (state, data keys)."""
    rows = {}
    for line in stdout.splitlines():
        match = re.match(r"^\W*(\d+)\W+([a-z ]+?)\W+(\d+)\W*$", line)
        if match:
            rows[int(match[1])] = (match[2].strip(), int(match[3]))
    return rows
