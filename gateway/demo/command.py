"""Running `calendar-gateway demo`: the scratch folder, the log file, the stack, and what the
reader sees when a step fails (see `gateway/demo/runner.py` for the steps)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from pathlib import Path

import aiohttp

from gateway.demo import render
from gateway.demo.errors import DemoFailed
from gateway.demo.runner import Demo
from gateway.demo.stack import running_stack
from gateway.demo.walk import Api, Google
from gateway.observability.logs import make_handler

log = logging.getLogger(__name__)

LOG_FILE = "gateway.log"


def _log_to_file(path: Path) -> tuple[logging.Handler, list[logging.Handler], int]:
    """Send every log line to `path` (redacted as always) instead of the screen."""
    root = logging.getLogger()
    previous, level = list(root.handlers), root.level
    handler = make_handler("text", path.open("a", encoding="utf-8"))
    for old in previous:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler, previous, level


def _restore_logging(handler: logging.Handler, previous: list[logging.Handler], level: int) -> None:
    root = logging.getLogger()
    root.removeHandler(handler)
    handler.close()
    for old in previous:
        root.addHandler(old)
    root.setLevel(level)


def _prepare_workdir(workdir: Path | None) -> Path:
    if workdir is None:
        return Path(tempfile.mkdtemp(prefix="calendar-gateway-demo-"))
    if workdir.exists() and any(workdir.iterdir()):
        raise DemoFailed(f"--workdir {workdir} is not empty: the demo needs a fresh folder")
    workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return workdir


def _log_tail(path: Path, lines: int = 15) -> list[str]:
    try:
        return path.read_text("utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return []


async def run_demo(*, workdir: Path | None = None, plain: bool = False) -> int:
    """Run the whole demo; 0 on success. DemoFailed when a step fails (after printing it).

    `workdir`: use (and keep) this folder instead of a temporary one that is removed after.
    """
    console = render.make_console(plain=plain)
    folder = await asyncio.to_thread(_prepare_workdir, workdir)
    log_path = folder / LOG_FILE
    handler, previous, level = await asyncio.to_thread(_log_to_file, log_path)
    started = time.monotonic()
    console.print("[bold]Calendar Gateway demo[/bold]")
    console.print(
        "No Google account and no configuration: a local Google emulator and the gateway on "
        "embedded defaults, in a scratch folder, talking over real HTTP. Every step below is "
        "a real call.",
    )
    try:
        async with running_stack(folder) as stack, aiohttp.ClientSession() as http:
            demo = Demo(
                console=console,
                stack=stack,
                api=Api(http, stack.gateway_url, stack.api_key),
                google=Google(http, stack.google_url),
            )
            await demo.run()
    except Exception as exc:
        if isinstance(exc, DemoFailed):
            why = str(exc)
        else:
            # A bug or a dead server: the traceback goes to the log (redacted); the screen
            # gets the type only, since driver messages can quote values.
            log.exception("demo step failed")
            why = f"unexpected {type(exc).__name__}"
        tail = await asyncio.to_thread(_log_tail, log_path)
        console.print()
        console.print(f"[bold red]The demo stopped:[/bold red] {why}", markup=True)
        if tail:
            console.print("[dim]last lines of the gateway's log:[/dim]")
            for line in tail:
                console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
        if isinstance(exc, DemoFailed):
            raise
        raise DemoFailed(f"{why} during the demo (details in the log above)") from None
    finally:
        await asyncio.to_thread(_restore_logging, handler, previous, level)
        if workdir is None:
            await asyncio.to_thread(shutil.rmtree, folder, True)
    console.print()
    console.print(f"[bold green]Demo complete[/bold green] in {time.monotonic() - started:.1f} s.")
    return 0
