"""/metrics: Prometheus text with request, refresh, Google, vault and stored-state figures."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families

from gateway.http.appkeys import SYNC_KEY, TOKENS_KEY
from tests.support.availability import connect, day, event
from tests.support.stack import ALICE, Stack


async def _scrape(stack: Stack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with stack.http.get(stack.url("/metrics")) as r:
        assert r.status == 200
        assert r.content_type == "text/plain"
        text = await r.text()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_requests_are_counted_by_route_template_not_by_id(stack: Stack) -> None:
    connected = await stack.connect(ALICE, user_id="rep-1")
    before = await _scrape(stack)
    route = "/v1/integrations/{integration_id}"
    key = ("gateway_http_requests_total", (("method", "GET"), ("route", route), ("status", "200")))
    for _ in range(3):
        async with stack.http.get(
            stack.url(f"/v1/integrations/{connected['integration_id']}"), headers=stack.auth()
        ) as r:
            assert r.status == 200
    async with stack.http.get(stack.url("/v1/integrations/int_000000000000000000000000")) as r:
        assert r.status == 401
    after = await _scrape(stack)
    assert after[key] - before.get(key, 0) == 3
    unauth = (
        "gateway_http_requests_total",
        (("method", "GET"), ("route", route), ("status", "401")),
    )
    assert after[unauth] - before.get(unauth, 0) == 1
    assert not any(connected["integration_id"] in str(labels) for _, labels in after)


async def test_stored_state_gauges_and_vault_counts(stack: Stack) -> None:
    await stack.connect(ALICE, user_id="rep-1")
    scraped = await _scrape(stack)
    assert scraped[("gateway_integrations", (("status", "active"),))] == 1
    assert scraped[("gateway_push_channels_live", ())] == 0
    assert scraped[("gateway_vault_data_keys", (("kek_version", "1"),))] == 1
    # Connecting sealed the refresh and access tokens.
    assert scraped[("gateway_vault_operations_total", (("operation", "seal"),))] >= 2
    assert ("gateway_sync_lag_seconds_max", ()) in scraped


async def test_sqlite_s_writer_is_counted_on_sqlite_only(stack: Stack) -> None:
    """The embedded database's limit is its one writer: on SQLite /metrics says how long this
    process's write transactions held it and waited for it (connecting writes the integration
    and its sealed tokens); PostgreSQL has no such writer and no such series."""
    before = await _scrape(stack)
    await stack.connect(ALICE, user_id="rep-1")
    after = await _scrape(stack)
    names = ("held_seconds", "wait_seconds", "transactions")
    keys = [(f"gateway_sqlite_writer_{name}_total", ()) for name in names]
    if stack.engine.dialect.name != "sqlite":
        assert not any(key in after for key in keys)
        return
    held, waited, transactions = (after[key] - before.get(key, 0) for key in keys)
    assert transactions >= 1 and held > 0 and waited >= 0


async def test_token_refreshes_are_counted_by_outcome(stack: Stack) -> None:
    connected = await stack.connect(ALICE, user_id="rep-1")
    key = ("gateway_token_refreshes_total", (("outcome", "ok"),))
    before = (await _scrape(stack)).get(key, 0)
    await stack.app[TOKENS_KEY].force_refresh(connected["integration_id"])
    assert (await _scrape(stack))[key] == before + 1


# Requests by route and status with latency histograms, sync lag, syncs by outcome, Google
# errors by reason, refreshes by outcome, live channels, integrations by status, DEKs per KEK
# version, vault operations.
ISSUE_7_SAMPLES = {
    "gateway_http_requests_total",
    "gateway_http_request_duration_seconds_bucket",
    "gateway_sync_lag_seconds_max",
    "gateway_sync_runs_total",
    "gateway_google_errors_total",
    "gateway_token_refreshes_total",
    "gateway_push_channels_live",
    "gateway_integrations",
    "gateway_vault_data_keys",
    "gateway_vault_operations_total",
}


def _sync_runs(scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    """gateway_sync_runs_total as {"kind/outcome": count}."""
    return {
        f"{dict(labels)['kind']}/{dict(labels)['outcome']}": value
        for (name, labels), value in scraped.items()
        if name == "gateway_sync_runs_total"
    }


async def test_sync_runs_are_counted_by_kind_and_outcome(stack: Stack) -> None:
    """A first sync, an incremental one, a 410 resync, a 503 and syncs of a revoked
    integration each show up in gateway_sync_runs_total (and the 503 in Google's errors)."""
    integration_id = await connect(stack, ALICE)
    engine = stack.app[SYNC_KEY]
    [calendar] = await engine.ensure_calendars(integration_id)
    scraped = await _scrape(stack)
    before = _sync_runs(scraped)
    errors_key = ("gateway_google_errors_total", (("reason", "backendError"),))
    errors_before = scraped.get(errors_key, 0)

    assert (await engine.sync_calendar(calendar.id)).full
    event(stack, ALICE, day(3), day(3) + timedelta(hours=1))
    assert (await engine.sync_calendar(calendar.id)).status == "synced"
    stack.google.calendars.invalidate_sync_tokens(ALICE)
    assert (await engine.sync_calendar(calendar.id)).resynced
    stack.google.inject_fault(status=503, user=ALICE, endpoint="events.list")
    assert (await engine.sync_calendar(calendar.id)).status == "failed"
    # The user revokes access at Google: the sync finds the grant dead, moves the integration
    # to needs_reauth and ends inactive; the next one does not call Google at all.
    stack.google.revoke_user_access(ALICE)
    assert (await engine.sync_calendar(calendar.id)).status == "inactive"
    assert (await engine.sync_calendar(calendar.id)).status == "inactive"

    scraped = await _scrape(stack)
    after = _sync_runs(scraped)
    grown = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    assert grown == {
        "full/ok": 1,
        "incremental/ok": 1,
        "resync/ok": 1,
        "incremental/backoff": 1,
        "incremental/inactive": 2,
    }
    assert scraped[errors_key] == errors_before + 1
    # Every figure issue 7 lists is exposed once it has something to count.
    exposed = {name for name, _ in scraped}
    assert not ISSUE_7_SAMPLES - exposed, ISSUE_7_SAMPLES - exposed
