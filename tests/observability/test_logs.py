"""Log lines: JSON or text, each with its request id, and never a token-shaped secret."""

from __future__ import annotations

import io
import json
import logging

import pytest
from aiohttp.http_exceptions import BadHttpMessage

from gateway.observability.context import request_id_bound
from gateway.observability.logs import ProtocolErrorFilter, make_handler, redact

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
