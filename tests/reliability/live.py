"""A whole stack (emulator + gateway over real HTTP) running in a background thread with its
own event loop, for synchronous clients such as schemathesis (which sends with `requests`).

    with live_stack(tmp_path, emulator_secrets, backend="sqlite") as live:
        requests.get(live.base_url + "/healthz")
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.db.engine import create_engine
from gateway.db.migrate import upgrade
from tests.support.databases import fresh_database_url
from tests.support.stack import ALICE, EmulatorSecrets, Stack, start_stack


@dataclass
class LiveStack:
    base_url: str
    api_key: str = field(repr=False)
    other_tenant_key: str = field(repr=False)
    integration_id: str
    loop: asyncio.AbstractEventLoop
    stack: Stack

    def run(self, coro: Any, timeout: float = 60) -> Any:
        """Run a coroutine on the stack's loop (e.g. to inspect its database)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


@contextmanager
def live_stack(
    tmp_path: Path, emulator_secrets: EmulatorSecrets, backend: str = "sqlite"
) -> Iterator[LiveStack]:
    ready: Future[LiveStack] = Future()
    stop: asyncio.Event | None = None

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        try:
            async with fresh_database_url(backend, tmp_path) as url:
                engine = await create_engine(url)
                try:
                    await upgrade(engine)
                    async for stack in start_stack(
                        engine, url, tmp_path, emulator_secrets=emulator_secrets
                    ):
                        connected = await stack.connect(ALICE, user_id="fuzz-user")
                        ready.set_result(
                            LiveStack(
                                base_url=stack.base_url,
                                api_key=stack.api_key,
                                other_tenant_key=stack.other_tenant_key,
                                integration_id=connected["integration_id"],
                                loop=asyncio.get_running_loop(),
                                stack=stack,
                            )
                        )
                        await stop.wait()
                finally:
                    await engine.dispose()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

    errors: list[BaseException] = []

    def thread_main() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=thread_main, name="live-stack", daemon=True)
    thread.start()
    live = ready.result(timeout=120)
    try:
        yield live
    finally:
        live.loop.call_soon_threadsafe(stop.set)  # type: ignore[union-attr]
        thread.join(timeout=60)
        if errors:
            # The stack's own teardown checks (no secret in any log line) failed.
            raise errors[0]
