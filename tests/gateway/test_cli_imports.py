"""Commands that do not serve HTTP do not load the HTTP application (gateway.cli promises it):
`keys`, `migrate` and `api-keys` start in a fraction of the time `serve` needs, which counts for
operators scripting key rotation and for every CLI test. Not even aiohttp (0.15 s) nor rich's
progress bar (used by `keys rewrap` alone): `keys status` took 1.32 s with them and 1.04 s
without, on average over five runs each."""

from __future__ import annotations

import subprocess
import sys


def test_non_serving_commands_do_not_import_the_app() -> None:
    probe = (
        "import sys, gateway.cli, gateway.commands; "
        "print(sorted(m for m in ('gateway.app', 'gateway.mcp.routes', 'mcp', 'aiohttp', "
        "'rich.progress') "
        "if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout
