"""The booking request rules (pure): normalisation behind the idempotency fingerprint, the
events.insert body, and every refusal naming its field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from gateway.booking.request import parse_booking, parse_change
from gateway.errors import InvalidInput
from gateway.google.events import GATEWAY_PROPERTY

START = datetime(2030, 1, 7, 10, 0, tzinfo=UTC)
END = START + timedelta(minutes=30)


def test_the_same_booking_spelled_differently_has_one_fingerprint() -> None:
    plain = parse_booking(summary="Intro", start=START, end=END, attendees=["A@x.org", "b@y.org"])
    berlin = timezone(timedelta(hours=1))
    spelled = parse_booking(
        summary="Intro",
        start=START.astimezone(berlin),
        end=END.astimezone(berlin),
        attendees=["b@y.org", "a@x.org"],
        if_free=True,
        send_updates="none",
    )
    assert plain.fingerprint() == spelled.fingerprint()
    for other in (
        parse_booking(summary="Intro!", start=START, end=END),
        parse_booking(summary="Intro", start=START, end=END + timedelta(minutes=1)),
        parse_booking(summary="Intro", start=START, end=END, if_free=False),
    ):
        assert other.fingerprint() != plain.fingerprint()


def test_the_insert_body_carries_our_id_and_marker_and_no_empty_fields() -> None:
    request = parse_booking(summary="Intro", start=START, end=END, time_zone="Europe/Berlin")
    body = request.google_body("abc12345", "tag-of-this-integration")
    assert body["id"] == "abc12345"
    assert body["start"] == {"dateTime": "2030-01-07T10:00:00Z", "timeZone": "Europe/Berlin"}
    assert body["extendedProperties"]["private"][GATEWAY_PROPERTY] == "tag-of-this-integration"
    assert "description" not in body and "attendees" not in body
    assert "Intro" not in repr(request)  # titles are personal data: not in reprs


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"end": START}, "end"),
        ({"end": START + timedelta(days=15)}, "end"),
        ({"start": START.replace(tzinfo=None)}, "start"),
        # Valid RFC 3339 times whose UTC is before year 1 (found by the API fuzz test).
        ({"end": datetime(1, 1, 1, 0, 0, 1, tzinfo=timezone(timedelta(hours=1)))}, "end"),
        ({"start": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))}, "start"),
        ({"summary": "   "}, "summary"),
        ({"summary": "two\nlines"}, "summary"),
        ({"summary": "x" * 1025}, "summary"),
        ({"calendar_id": "primary"}, "calendar_id"),
        ({"time_zone": "not a zone"}, "time_zone"),
        ({"attendees": ["a@x.org", "A@x.org"]}, "attendees[1].email"),
        ({"attendees": ["nobody"]}, "attendees[0].email"),
        ({"send_updates": "externalOnly"}, "send_updates"),
    ],
)
def test_refusals_name_the_field(changes: dict[str, Any], field: str) -> None:
    args: dict[str, Any] = {"summary": "Intro", "start": START, "end": END, **changes}
    with pytest.raises(InvalidInput) as caught:
        parse_booking(**args)
    assert caught.value.extra["field"] == field
    assert caught.value.status == 422


def test_a_change_moves_start_and_end_together_and_is_not_empty() -> None:
    change = parse_change(start=START, end=END, summary="Moved")
    assert change.google_patch() == {
        "summary": "Moved",
        "start": {"dateTime": "2030-01-07T10:00:00Z"},
        "end": {"dateTime": "2030-01-07T10:30:00Z"},
    }
    with pytest.raises(InvalidInput) as half:
        parse_change(start=START)
    assert half.value.extra["field"] == "end"
    with pytest.raises(InvalidInput) as empty:
        parse_change()
    assert empty.value.code == "empty_change"
