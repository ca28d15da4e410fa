"""Log lines: JSON or text, each with its request id, and never a token-shaped secret."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.app import create_app
from gateway.http.access_log import PathOnlyAccessLogger
from gateway.observability.context import request_id_bound
from gateway.observability.logs import ProtocolErrorFilter, make_handler, redact
from gateway.settings import load_settings

API_KEY = "cgw_0123456789abcdef01234567_" + "Zk" * 21 + "Q"


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ("refreshed: ya29.a0AfB_byC-123", "ya29.a0AfB_byC-123"),
        ("stored 1//0gLx-Abcdefghijkl", "1//0gLx-Abcdefghijkl"),
        ("GET /oauth/google/callback?code=4/0AemuXYZabcdef123&state=s3cr3tstate", "s3cr3tstate"),
        ("GET /oauth/google/callback?code=4/0AemuXYZabcdef123&state=x", "4/0AemuXYZabcdef123"),
        (f"Authorization: Bearer {API_KEY}", API_KEY),
        (f"key {API_KEY} used", API_KEY),
        ('body {"refresh_token": "rt-plain-value", "n": 1}', "rt-plain-value"),
        ("id eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl end", "c2lnbmF0dXJl"),
        ("client_secret=emu-gateway-test-secret&x=1", "emu-gateway-test-secret"),
    ],
)
def test_token_shaped_strings_are_redacted(line: str, secret: str) -> None:
    cleaned = redact(line)
    assert secret not in cleaned
    assert "[redacted" in cleaned


def test_redaction_keeps_what_operators_need() -> None:
    line = "sync ok: calendar=cal_0123456789abcdef01234567 key=cgw_0123456789abcdef01234567"
    assert redact(line) == line
    # The public half of an API key stays, so a log line still says which key was used.
    assert redact(f"used {API_KEY}").startswith("used cgw_0123456789abcdef01234567_")


def _emit(fmt: str, message: str, *args: object, exc: BaseException | None = None) -> str:
    out = io.StringIO()
    logger = logging.getLogger(f"test.observability.{fmt}")
    logger.propagate = False
    handler = make_handler(fmt, out)  # type: ignore[arg-type]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with request_id_bound("req_abc123"):
            if exc is not None:
                try:
                    raise exc
                except type(exc):
                    logger.exception(message, *args)
            else:
                logger.info(message, *args)
    finally:
        logger.removeHandler(handler)
    return out.getvalue()


def test_json_lines_carry_level_logger_request_id_and_no_secret() -> None:
    line = _emit("json", "token %s refreshed", "ya29.secretvalue")
    record = json.loads(line)
    assert record["level"] == "INFO"
    assert record["logger"] == "test.observability.json"
    assert record["request_id"] == "req_abc123"
    assert record["message"] == "token ya29.[redacted] refreshed"
    assert "time" in record


def test_tracebacks_are_redacted_too() -> None:
    text = _emit("json", "failed", exc=ValueError("bad grant 1//0gSecretRefreshTok"))
    assert "1//0gSecretRefreshTok" not in text
    assert "ValueError" in json.loads(text)["exc_info"]


def test_text_lines_show_the_request_id() -> None:
    line = _emit("text", "hello %s", "world")
    assert "[req_abc123]: hello world" in line


def test_unparsable_requests_are_logged_without_the_raw_header_line() -> None:
    """aiohttp quotes the offending header line of a request it cannot parse (a channel token
    or an API key with a stray CR); the filter keeps the peer and the error's class only."""
    token = "chan-secret-Zq81xPz0lKd"
    out = io.StringIO()
    logger = logging.getLogger("test.observability.protocol")
    logger.propagate = False
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.addFilter(ProtocolErrorFilter())
    try:
        exc = BadHttpMessage(f"Missing expected LF:\n\n  b'X-Goog-Channel-Token: {token}\\rx'")
        logger.error("Error handling request from %s", "127.0.0.1", exc_info=exc)
        logger.error("Error handling request from %s", "127.0.0.1", exc_info=RuntimeError("x"))
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    assert token not in text
    assert "ERROR Error handling request from 127.0.0.1: malformed HTTP request refused" in text
    assert "(BadHttpMessage)" in text
    # Other failures keep their traceback.
    assert "RuntimeError: x" in text


# -- log forging: control characters in logged fields ----------------------------------------

# Every character that can end a line somewhere (a terminal, `str.splitlines`, a log shipper,
# an editor): LF, CR, VT, FF, FS/GS/RS, NEL, and the Unicode line and paragraph separators.
_FORGERS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_FAKE = "2026-12-05 10:00:00,000 INFO gateway.audit [req_x]: admin granted"


def _control_free(text: str) -> bool:
    return not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029" for c in text)


@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.parametrize("char", list(_FORGERS))
def test_a_logged_argument_cannot_start_a_line(fmt: str, char: str) -> None:
    out = _emit(fmt, "GET %s 404", f"/x{char}{_FAKE}")
    lines = out.splitlines()
    assert len(lines) == 1, lines
    if fmt == "json":
        message = json.loads(lines[0])["message"]
        assert _control_free(message), message
        assert message.startswith("GET /x\\")
    else:
        assert "[req_abc123]: GET /x\\" in lines[0]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_traceback_cannot_forge_a_line_either(fmt: str) -> None:
    out = _emit(fmt, "failed for %s", "u\r\n" + _FAKE, exc=ValueError("bad\n" + _FAKE + "\x85x"))
    if fmt == "json":
        [line] = out.splitlines()
        record = json.loads(line)
        assert _control_free(record["message"])
        # The traceback keeps its line breaks inside the JSON string, and nothing else.
        assert all(_control_free(part) for part in record["exc_info"].split("\n"))
    else:
        first, *rest = out.splitlines()
        assert first.endswith("failed for u\\r\\n" + _FAKE)
        # Every line after the record's first is the traceback's, indented.
        assert rest and all(line.startswith("    ") for line in rest[1:]), rest
        assert rest[0] == "Traceback (most recent call last):"
        assert not any(line.startswith(_FAKE[:10]) for line in rest)


async def test_a_request_path_cannot_forge_an_access_log_line(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    """Finding 2 of issue 14: `GET /x%0a<fake line>` wrote a second, forged line."""
    settings = load_settings(
        env_file=None, database_url=database_url, kek_uri=f"file:{tmp_path / 'k.json'}"
    )
    out = io.StringIO()
    handler = make_handler("text", out)
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        server = TestServer(create_app(settings, engine=engine), host="127.0.0.1", port=0)
        await server.start_server(access_log_class=PathOnlyAccessLogger)
        async with TestClient(server) as client:
            forged = quote(_FAKE.replace(" ", "_"), safe="")
            response = await client.get(f"/x%0a{forged}%0d%e2%80%a8%c2%85")
            assert response.status == 404
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
    lines = out.getvalue().splitlines()
    [access] = [line for line in lines if "admin_granted" in line]
    assert " INFO aiohttp.access [req_" in access
    assert "GET /x\\n2026-12-05_10:00:00,000_INFO" in access
    assert "admin_granted\\r\\u2028\\x85 404 " in access


# -- emails in URLs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "URL being requested: GET https://www.googleapis.com/calendar/v3/calendars/"
        "alice.smith%40example.com/events?maxResults=250&alt=json",
        "GET http://127.0.0.1:1/calendar/v3/calendars/alice.smith@example.com/events",
        "Next page request URL: GET https://www.googleapis.com/calendar/v3/calendars/"
        "Alice.Smith%40Example.COM/events?pageToken=x",
        "GET /calendar/v3/calendars/alice.smith%2540example.com/events 200",
        '{"message": "GET https://x.test/a?calendarId=alice.smith%40example.com"}',
    ],
)
def test_emails_in_urls_are_redacted(line: str) -> None:
    cleaned = redact(line)
    assert "alice.smith" not in cleaned.lower()
    assert "[redacted-email]" in cleaned
    # What comes before the address is kept as it was.
    assert cleaned.split("[redacted-email]")[0] == line[: line.lower().index("alice.smith")]


def test_email_redaction_keeps_the_rest_of_the_url() -> None:
    line = "GET https://www.googleapis.com/calendar/v3/calendars/bob%40example.com/events?x=1"
    assert redact(line) == (
        "GET https://www.googleapis.com/calendar/v3/calendars/[redacted-email]/events?x=1"
    )
    plain = "sync ok: calendar=cal_0123 https://www.googleapis.com/calendar/v3/calendars/primary"
    assert redact(plain) == plain
