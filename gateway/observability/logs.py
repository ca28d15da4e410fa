"""Log output: JSON lines for machines, readable text on a terminal, secrets never.

    configure_logging(level="INFO", fmt="auto")   # JSON unless stderr is a terminal

Every line carries the request id of the request (or job) that caused it. A redaction layer
runs over each finished line, whatever logger or library produced it: token-shaped strings
(Google access/refresh tokens and authorization codes, JWTs, our API keys, Bearer values,
secret query parameters and JSON members) are replaced before the line leaves the process.
Code must still never log a secret: this is the net under that rule, not the rule.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, Literal, TextIO

from aiohttp.http_exceptions import HttpProcessingError
from pythonjsonlogger.json import JsonFormatter

from gateway.observability.context import current_request_id

LogFormat = Literal["auto", "json", "text"]

# Names of secret-carrying fields (not secrets themselves).
_SECRET_NAMES = "|".join(
    [
        "access_token",
        "refresh_token",
        "id_token",
        "client_secret",
        "code_verifier",
        "code",
        "state",
        "token",
        "assertion",
        "password",
        "secret",
    ]
)
# (pattern, replacement). Replacements hold no quote or backslash, so JSON output stays valid.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"ya29\.[A-Za-z0-9._\-]+"), "ya29.[redacted]"),
    (re.compile(r"1//[A-Za-z0-9._\-]{8,}"), "1//[redacted]"),
    (re.compile(r"\b4/[A-Za-z0-9._\-]{10,}"), "4/[redacted]"),
    (re.compile(r"eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*"), "[redacted-jwt]"),
    (re.compile(r"\b(cgw_[0-9a-f]{24})_[A-Za-z0-9_\-]{43}"), r"\1_[redacted]"),
    (re.compile(r"(?i)\b(bearer\s+)[^\s\"',;]+"), r"\1[redacted]"),
    (re.compile(rf"(?i)\b({_SECRET_NAMES})=([^&\s\"',;]+)"), r"\1=[redacted]"),
    (
        re.compile(rf"(?i)(\\?\"(?:{_SECRET_NAMES})\\?\"\s*:\s*\\?\")([^\"\\]+)"),
        r"\1[redacted]",
    ),
)


def redact(text: str) -> str:
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


class RequestIdFilter(logging.Filter):
    """Adds `request_id` (or None) to every record that does not carry one already (the
    access log passes the id of the request it describes)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = current_request_id()
        return True


class ProtocolErrorFilter(logging.Filter):
    """Rewrites aiohttp's "Error handling request" records for requests it could not parse.

    The parser's message quotes the offending raw bytes, typically a whole header line
    (`Authorization: Bearer ...`, `X-Goog-Channel-Token: ...`) with a stray CR, LF or NUL; its
    traceback says nothing an operator needs. The line keeps the peer and the error's class.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and (exc.code or 400) < 500:
            said = record.getMessage()
            record.msg = "%s: malformed HTTP request refused (%s)"
            record.args = (said, type(exc).__name__)
            record.exc_info = None
            record.exc_text = None
        return True


_PROTOCOL_FILTER = ProtocolErrorFilter()


def quiet_protocol_errors() -> None:
    """Install `ProtocolErrorFilter` on aiohttp's server logger (idempotent; at app start)."""
    logger = logging.getLogger("aiohttp.server")
    if _PROTOCOL_FILTER not in logger.filters:
        logger.addFilter(_PROTOCOL_FILTER)


class RedactingTextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class RedactingJsonFormatter(JsonFormatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


_TEXT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
_JSON_FIELDS = ["asctime", "levelname", "name", "request_id", "message"]


def make_handler(fmt: LogFormat = "auto", stream: TextIO | None = None) -> logging.Handler:
    out = stream if stream is not None else sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    handler = logging.StreamHandler(out)
    formatter: logging.Formatter
    if use_json:
        formatter = RedactingJsonFormatter(
            _JSON_FIELDS,
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            timestamp=False,
        )
    else:
        formatter = RedactingTextFormatter(_TEXT)
    handler.setFormatter(formatter)
    handler.addFilter(RequestIdFilter())
    return handler


def configure_logging(level: str, fmt: LogFormat = "auto", stream: TextIO | None = None) -> None:
    """Replace the root logger's handlers with one redacting handler."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(make_handler(fmt, stream))
    root.setLevel(level)
    # Database drivers log statements with their parameters (sealed blobs, PKCE verifiers):
    # they stay at WARNING whatever the level; Alembic narrates every revision at INFO.
    quiet: dict[str, Any] = {
        "aiosqlite": logging.WARNING,
        "asyncpg": logging.WARNING,
        "sqlalchemy.engine": logging.WARNING,
        "sqlalchemy.pool": logging.WARNING,
    }
    if level != "DEBUG":
        quiet["alembic"] = logging.WARNING
    for name, value in quiet.items():
        logging.getLogger(name).setLevel(value)
