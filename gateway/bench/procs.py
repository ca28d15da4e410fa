"""Subprocesses of a benchmark run: the Google emulator, gateways and load generators.

Each one is a real process on loopback (as in production, the gateway shares no event loop with
Google or with its callers); its output goes to a log file in the run's folder, and it is
stopped with SIGTERM (SIGKILL after a grace period) when the run ends, whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from gateway.errors import GatewayError

STOP_GRACE_S = 10.0


class BenchError(GatewayError):
    """A benchmark could not be run (a process did not start, a phase timed out)."""

    code = "bench_failed"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@asynccontextmanager
async def process(
    name: str,
    args: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    ready_url: str | None = None,
    ready_timeout_s: float = 60.0,
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run `python args...` until the block ends; when `ready_url` is given, wait until it
    answers 200 first (BenchError, with the log's tail, if the process dies or never does)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    log = await asyncio.to_thread(log_path.open, "ab")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        env=full_env,
    )
    try:
        if ready_url is not None:
            await _wait_ready(name, proc, ready_url, log_path, ready_timeout_s)
        yield proc
    finally:
        await stop(proc)
        log.close()


async def stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL if it has not ended within STOP_GRACE_S."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process has used so far; 0.0 where /proc is missing."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # Fields 14 and 15 of proc(5) (utime, stime), counted after the ")" that ends the name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Resident memory of the process now (VmRSS); 0 where /proc is missing."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024  # proc(5) says kB
    except OSError:
        pass
    return 0


async def _wait_ready(
    name: str, proc: asyncio.subprocess.Process, url: str, log_path: Path, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise BenchError(f"{name} exited with {proc.returncode}:\n{_tail(log_path)}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise BenchError(f"{name} did not become ready within {timeout_s:.0f} s:\n{_tail(log_path)}")
