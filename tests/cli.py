"""Running the real `calendar-gateway` command in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


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
