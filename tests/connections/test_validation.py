"""Strict request parsing: every bad body is a 4xx problem naming the field, never a 500, and
never an echo of the value sent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from multidict import MultiDict, MultiDictProxy
from pydantic import Field

from gateway.errors import InvalidInput
from gateway.http.validation import (
    PrintableText,
    Rfc3339,
    StrictBody,
    field_path,
    parse_json,
    parse_query,
    parse_rfc3339,
)
from tests.support.stack import RETURN_URL, Stack


class Item(StrictBody):
    id: str


class Thing(StrictBody):
    name: PrintableText = Field(min_length=1, max_length=10)
    count: int = 0
    starts_at: Rfc3339 | None = None
    items: list[Item] = []


def problem_of(raw: bytes) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        parse_json(raw, Thing)
    return caught.value


# -- parse_json -------------------------------------------------------------------------------


def test_valid_body() -> None:
    thing = parse_json(
        b'{"name": "a", "count": 2, "starts_at": "2026-01-31T09:00:00+01:00", '
        b'"items": [{"id": "x"}]}',
        Thing,
    )
    assert thing.count == 2
    assert thing.starts_at == datetime(2026, 1, 31, 8, 0, tzinfo=UTC)
    assert thing.items == [Item(id="x")]


@pytest.mark.parametrize(
    "raw",
    [b"", b"   ", b"{", b'{"name": "a",}', b"\xff\xfe", b'{"name": NaN}', b'{"count": Infinity}'],
)
def test_malformed_json_is_400(raw: bytes) -> None:
    problem = problem_of(raw)
    assert (problem.status, problem.code) == (400, "malformed_json")
    assert problem.message.startswith("request body:")


@pytest.mark.parametrize("raw", [b"[]", b'"name"', b"3", b"null"])
def test_body_must_be_an_object(raw: bytes) -> None:
    problem = problem_of(raw)
    assert (problem.status, problem.code) == (422, "invalid_body")


def test_duplicate_key() -> None:
    problem = problem_of(b'{"name": "a", "name": "b"}')
    assert (problem.code, problem.extra["field"]) == ("duplicate_field", "name")


@pytest.mark.parametrize(
    ("raw", "code", "detail"),
    [
        (b"{}", "missing_field", "name: field required"),
        (b'{"name": "a", "nmae": 1}', "unknown_field", "nmae: unknown field"),
        (b'{"name": 5}', "invalid_field", "name: input should be a valid string"),
        (b'{"name": "a", "count": "5"}', "invalid_field", "count: input should be a valid integer"),
        (
            b'{"name": "a", "count": true}',
            "invalid_field",
            "count: input should be a valid integer",
        ),
        (b'{"name": "a", "count": 1.5}', "invalid_field", "count: input should be a valid integer"),
        (b'{"name": "a\\u0000"}', "invalid_field", "name: must not contain control characters"),
        (b'{"name": "a", "items": [{"id": 1}]}', "invalid_field", "items[0].id: input should be"),
    ],
)
def test_field_errors_name_the_field(raw: bytes, code: str, detail: str) -> None:
    problem = problem_of(raw)
    assert (problem.status, problem.code) == (422, code)
    assert problem.message.startswith(detail)
    assert problem.extra["field"] == detail.split(":")[0]


def test_every_error_is_listed_and_no_value_is_echoed() -> None:
    problem = problem_of(b'{"name": "hunter2-secret-value", "count": "ya29.secret", "x": 1}')
    errors: list[dict[str, str]] = problem.extra["errors"]  # type: ignore[assignment]
    fields = {e["field"]: e["code"] for e in errors}
    assert fields == {"name": "invalid_field", "count": "invalid_field", "x": "unknown_field"}
    rendered = str(problem.message) + str(problem.extra)
    assert "hunter2" not in rendered and "ya29" not in rendered


@pytest.mark.parametrize(
    "value",
    [
        "2026-01-31",
        "2026-01-31T09:00:00",  # no offset
        "2026-01-31T09:00Z",  # no seconds
        "2026-01-31 09:00:00Z",
        "2026-02-30T09:00:00Z",
        "2026-01-31T25:00:00Z",
        "1769850000",
        "",
        "0001-01-01T00:00:01+01:00",  # before year 1 in UTC
        "9999-12-31T23:00:00-02:00",  # after year 9999 in UTC
    ],
)
def test_bad_timestamps(value: str) -> None:
    problem = problem_of(f'{{"name": "a", "starts_at": "{value}"}}'.encode())
    assert (problem.code, problem.extra["field"]) == ("invalid_field", "starts_at")
    assert "RFC 3339" in problem.message or "valid date" in problem.message


def test_timestamp_number_is_refused() -> None:
    problem = problem_of(b'{"name": "a", "starts_at": 1769850000}')
    assert problem.extra["field"] == "starts_at"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-31T09:00:00Z", datetime(2026, 1, 31, 9, tzinfo=UTC)),
        ("2026-01-31t09:00:00z", datetime(2026, 1, 31, 9, tzinfo=UTC)),
        (
            "2026-01-31T09:00:00.123456789-05:30",
            datetime(
                2026, 1, 31, 9, 0, 0, 123456, tzinfo=timezone(-timedelta(hours=5, minutes=30))
            ),
        ),
    ],
)
def test_good_timestamps(value: str, expected: datetime) -> None:
    assert parse_rfc3339(value) == expected


def test_field_path() -> None:
    assert field_path(("items", 0, "id")) == "items[0].id"
    assert field_path(()) == "request body"


# -- parse_query ------------------------------------------------------------------------------


class Listing(StrictBody):
    user_id: str | None = None
    limit: int = 10


def query(*pairs: tuple[str, str]) -> MultiDictProxy[str]:
    return MultiDictProxy(MultiDict(pairs))


def test_query_converts_strings_but_stays_strict_otherwise() -> None:
    assert parse_query(query(("limit", "5")), Listing).limit == 5
    with pytest.raises(InvalidInput) as caught:
        parse_query(query(("limit", "five")), Listing)
    assert caught.value.extra["field"] == "limit"
    with pytest.raises(InvalidInput) as caught:
        parse_query(query(("user", "x")), Listing)
    assert caught.value.code == "unknown_field"
    with pytest.raises(InvalidInput) as caught:
        parse_query(query(("user_id", "a"), ("user_id", "b")), Listing)
    assert caught.value.code == "duplicate_field"


# -- over HTTP: POST /v1/connect-sessions -----------------------------------------------------


async def post(stack: Stack, data: bytes, content_type: str = "application/json") -> Any:
    async with stack.http.post(
        stack.url("/v1/connect-sessions"),
        data=data,
        headers={**stack.auth(), "Content-Type": content_type},
    ) as response:
        assert response.content_type == "application/problem+json"
        body = await response.json()
        assert body["status"] == response.status
        assert "Traceback" not in body["detail"]
        return body


async def test_bad_bodies_over_http(stack: Stack) -> None:
    problem = await post(stack, b'{"user_id": "u-1"')
    assert (problem["status"], problem["code"]) == (400, "malformed_json")

    problem = await post(stack, b'{"return_url": "%s"}' % RETURN_URL.encode())
    assert (problem["status"], problem["code"]) == (422, "missing_field")
    assert problem["detail"] == "user_id: field required"

    body = b'{"user_id": "u-1", "return_url": "%s", "scope": "all"}' % RETURN_URL.encode()
    problem = await post(stack, body)
    assert (problem["code"], problem["field"]) == ("unknown_field", "scope")

    problem = await post(stack, b'{"user_id": 42, "return_url": "%s"}' % RETURN_URL.encode())
    assert (problem["code"], problem["field"]) == ("invalid_field", "user_id")

    problem = await post(stack, b'{"user_id": "", "return_url": "%s"}' % RETURN_URL.encode())
    assert (problem["code"], problem["field"]) == ("invalid_field", "user_id")

    problem = await post(stack, b"user_id=u-1", "application/x-www-form-urlencoded")
    assert (problem["status"], problem["code"]) == (415, "unsupported_media_type")

    huge = b'{"user_id": "%s", "return_url": "x"}' % (b"u" * 70_000)
    problem = await post(stack, huge)
    assert (problem["status"], problem["code"]) == (413, "payload_too_large")

    body = b'{"user_id": "u-1", "return_url": "%s", "login_hint": null}' % RETURN_URL.encode()
    async with stack.http.post(
        stack.url("/v1/connect-sessions"),
        data=body,
        headers={**stack.auth(), "Content-Type": "application/json; charset=utf-8"},
    ) as response:
        assert response.status == 201
