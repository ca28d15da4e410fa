"""`create_app()` wires the sync engine (gateway.bootstrap, gateway.http.sync_wiring): the
engine is born with the app and the disconnect purge hook is registered once (a second app on
the stack's database and emulator)."""

from __future__ import annotations

from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.http.appkeys import INTEGRATIONS_KEY, SYNC_KEY
from gateway.http.disconnect_routes import disconnect_hooks
from gateway.sync.config import SyncConfig
from gateway.sync.engine import SyncEngine
from tests.support.stack import ALICE, Stack


async def test_setup_builds_the_engine_and_registers_the_purger(stack: Stack) -> None:
    result = await stack.connect(ALICE, user_id="u-wired")
    app = create_app(stack.settings, engine=stack.engine)
    purgers = disconnect_hooks(app).record_purgers
    # The sync engine's, then booking's (gateway.http.booking_routes), then the webhook
    # outbox's (gateway.http.webhook_endpoint_routes): each registered once.
    assert len(purgers) == 3
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        engine = app[SYNC_KEY]
        assert isinstance(engine, SyncEngine) and engine.config == SyncConfig()
        [calendar] = await engine.ensure_calendars(result["integration_id"])
        stack.google.calendars.insert_event(
            stack.google.calendars.ensure_user(ALICE),
            {
                "id": "cabled001",
                "start": {"dateTime": "2026-12-01T10:00:00Z"},
                "end": {"dateTime": "2026-12-01T11:00:00Z"},
            },
        )
        outcome = await engine.sync_calendar(calendar.id)
        assert outcome.status == "synced"
        integration = await app[INTEGRATIONS_KEY].get_by_id(result["integration_id"])
        assert integration is not None
        assert await purgers[0](integration) >= 2
        assert await engine.store.calendars_of(integration.id) == []
    finally:
        await server.close()
