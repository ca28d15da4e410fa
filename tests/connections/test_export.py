"""`GET /v1/integrations/{id}/export` holds everything stored about the integration, secrets
excepted, checked against a scan of every table of the schema, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
from typing import Any

from sqlalchemy import Table, select

from gateway.connections.export import EXPORT_SECTIONS, SECRET_COLUMNS, export_row
from gateway.db.schema import integrations, metadata
from gateway.http.appkeys import CHANNELS_KEY
from tests.support.availability import ALICE, at, call, connect, day, event, sync
from tests.support.booking import book, slot
from tests.support.stack import Stack

LINKS = ("integration_id", "calendar_id")


def linked_tables() -> list[Table]:
    """Every table that refers to an integration (or to one of its calendars)."""
    return [
        t
        for t in metadata.sorted_tables
        if t is integrations or any(name in t.columns for name in LINKS)
    ]


def test_every_table_about_an_integration_has_a_place_in_the_export() -> None:
    missing = [t.name for t in linked_tables() if t.name not in EXPORT_SECTIONS]
    assert missing == [], f"tables the export does not cover: {missing}"
    for table, column in SECRET_COLUMNS:
        assert column in metadata.tables[table].columns


async def rows_of(
    stack: Stack, table: Table, integration_id: str, calendar_ids: list[str]
) -> list[Any]:
    if table is integrations:
        where = table.c.id == integration_id
    elif "integration_id" in table.columns:
        where = table.c.integration_id == integration_id
    else:
        where = table.c.calendar_id.in_(calendar_ids)
    async with stack.engine.connect() as conn:
        return list((await conn.execute(select(table).where(where))).all())


def section(document: dict[str, Any], path: str) -> Any:
    value: Any = document
    for part in path.split("."):
        value = value[part]
    return value


def json_ready(value: Any) -> Any:
    return json.loads(json.dumps(value))


async def test_the_export_holds_every_stored_row_about_the_integration(stack: Stack) -> None:
    alice = await connect(stack, ALICE)
    d = day(7)
    event(stack, ALICE, at(d, "08:00"), at(d, "09:00"), summary="Dentist")
    calendar_ids = await sync(stack, alice)
    booked = await book(stack, alice, slot(d, description="Agenda"), key="k-1")
    assert booked.status == 201, booked.body
    await stack.app[CHANNELS_KEY].run_once()  # a push channel for the calendar

    response = await call(stack, "GET", f"/v1/integrations/{alice}/export")
    assert response.status == 200, response.body
    document = response.body

    covered = 0
    for table in linked_tables():
        rows = await rows_of(stack, table, alice, calendar_ids)
        where = EXPORT_SECTIONS[table.name]
        shown = section(document, where)
        if where.startswith("records."):
            expected = sorted((json_ready(export_row(table, r)) for r in rows), key=json.dumps)
            assert sorted(shown, key=json.dumps) == expected, table.name
        elif rows:
            assert shown, f"{table.name} has rows but the export's {where} is empty"
        covered += bool(rows)
    # The scan saw rows in the tables this test means to cover (it would be vacuous otherwise).
    assert covered >= 8, covered

    text = json.dumps(document)
    # The calendar id is the user's email: it is about the user, so it is exported.
    assert document["records"]["calendars"][0]["google_calendar_id"] == ALICE
    assert "Agenda" in text  # the stored details of the booked event
    assert [b["idempotency_key"] for b in document["records"]["bookings"]] == ["k-1"]
    # No secret column's value, in any spelling.
    for table_name, column in SECRET_COLUMNS:
        table = metadata.tables[table_name]
        for row in await rows_of(stack, table, alice, calendar_ids):
            value = row._mapping[column]
            if value is not None:
                assert value.hex() not in text and base64.b64encode(value).decode() not in text
            assert f'"{column}":' not in json.dumps(section(document, EXPORT_SECTIONS[table_name]))


async def test_the_export_of_a_disconnected_integration_holds_its_signed_receipt(
    stack: Stack,
) -> None:
    alice = await connect(stack, ALICE)
    deleted = await call(stack, "DELETE", f"/v1/integrations/{alice}")
    assert deleted.status == 200, deleted.body

    exported = await call(stack, "GET", f"/v1/integrations/{alice}/export")

    assert exported.status == 200
    assert exported.body["receipt"] == deleted.body["receipt"]
    assert exported.body["records"] == {
        "calendars": [],
        "calendar_events": [],
        "busy_blocks": [],
        "watch_channels": [],
        "bookings": [],
        "webhook_events": [],
    }
