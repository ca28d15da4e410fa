"""Log output: JSON lines for machines, readable text on a terminal, secrets never.

    configure_logging(level="INFO", fmt="auto")   # JSON unless stderr is a terminal

Every line carries the request id of the request (or job) that caused it. Two layers run over
every record, whatever logger or library produced it:

- Inert fields: control characters (C0, DEL, C1 with NEL, U+2028/U+2029) in the message, its
  arguments and every other field are written as visible escapes (`\\n`, `\\x1b`, `\\u2028`),
  so text a caller chose (a request path, a header) cannot end the line and forge another.
  Tracebacks keep their line breaks, but every line after the first is indented, so no
  continuation line can pass for a record of its own.
- Redaction over each finished line: token-shaped strings (Google access/refresh tokens and
  authorization codes, JWTs, our API keys, Bearer values, secret query parameters and JSON
  members) and email addresses inside URLs (a calendar id is its owner's email) are replaced
  before the line leaves the process.

Code must still never log a secret: this is the net under that rule, not the rule.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, Literal, TextIO

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
        "app_state",
    ]
)
# An email address in a URL or path, its `@` plain or percent-encoded (`%40`, or `%2540` when
# encoded twice): Calendar API URLs name calendars by their owner's email.
_URL = re.compile(r"(?i)(?:\b[a-z][a-z0-9+.\-]*://|(?<![\w.])/)[^\s\"'<>]*")
_EMAIL_IN_URL = re.compile(r"(?i)[a-z0-9._%+\-]+(?:@|%40|%2540)[a-z0-9\-]+(?:\.[a-z0-9\-]+)+")
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


def _redact_emails(url: re.Match[str]) -> str:
    return _EMAIL_IN_URL.sub("[redacted-email]", url.group())


def redact(text: str) -> str:
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    if "@" in text or "%40" in text or "%2540" in text:
        text = _URL.sub(_redact_emails, text)
    return text


# What could end a log line, or be taken to: C0 controls, DEL, C1 controls (NEL, U+0085,
# among them) and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_control(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED_ESCAPES.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """`text` on one line: every control character written as a visible escape."""
    return _CONTROL.sub(_escape_control, text)


_OWN_RENDERING = ("msg", "exc_text", "stack_info")


def _inert(record: logging.LogRecord) -> logging.LogRecord:
    """`record` itself when no text field holds a control character and it has no traceback
    (the common case: nothing to copy), else a copy whose message (arguments merged in) and
    every other text field hold none. A copy, because other handlers may see the original."""
    message = record.getMessage()
    fields = record.__dict__
    if (
        record.exc_info is None
        and record.stack_info is None
        and _CONTROL.search(message) is None
        and not any(
            isinstance(value, str) and name not in _OWN_RENDERING and _CONTROL.search(value)
            for name, value in fields.items()
        )
    ):
        return record
    clean = logging.makeLogRecord(fields)
    clean.msg = escape_controls(message)
    clean.args = None
    # Another handler may have cached its own rendering of the traceback: render ours.
    clean.exc_text = None
    for name, value in fields.items():
        if isinstance(value, str) and name not in _OWN_RENDERING:
            setattr(clean, name, escape_controls(value))
    return clean


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
        # Looked up, not imported: an aiohttp exception exists only once aiohttp is loaded, and
        # importing it here cost every CLI command (`keys`, `api-keys`, ...) 0.15 s at start.
        errors = sys.modules.get("aiohttp.http_exceptions")
        if errors is None or not isinstance(exc, errors.HttpProcessingError):
            return True
        if (exc.code or 400) < 500:
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


class _InertRedactingFormatter(logging.Formatter):
    """Escapes control characters in every field, then redacts the finished line."""

    # What joins the lines of a traceback: text lines indent them (see the module docstring);
    # JSON encodes the newline inside its string.
    multiline_joiner = "\n"

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(_inert(record)))

    def _lines(self, text: str) -> str:
        return self.multiline_joiner.join(escape_controls(line) for line in text.split("\n"))

    def formatException(self, ei: Any) -> str:
        return self._lines(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return self._lines(super().formatStack(stack_info))


class RedactingTextFormatter(_InertRedactingFormatter):
    multiline_joiner = "\n    "


class RedactingJsonFormatter(_InertRedactingFormatter, JsonFormatter):
    pass


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


# Libraries that log what must not leave the process, held at WARNING whatever the root level:
# database drivers log statements with their parameters (sealed blobs, PKCE verifiers), and
# googleapiclient logs every request URL at DEBUG, calendar ids (their owners' emails) in them.
_HELD_AT_WARNING = (
    "aiosqlite",
    "asyncpg",
    "sqlalchemy.engine",
    "sqlalchemy.pool",
    "googleapiclient.discovery",
)


def hold_chatty_loggers() -> None:
    """Hold `_HELD_AT_WARNING` at WARNING (idempotent; at logging set-up and app start, so an
    embedding that configures logging itself is covered too)."""
    for name in _HELD_AT_WARNING:
        logging.getLogger(name).setLevel(logging.WARNING)


def configure_logging(level: str, fmt: LogFormat = "auto", stream: TextIO | None = None) -> None:
    """Replace the root logger's handlers with one redacting handler."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(make_handler(fmt, stream))
    root.setLevel(level)
    hold_chatty_loggers()
    # Alembic narrates every revision at INFO.
    if level != "DEBUG":
        logging.getLogger("alembic").setLevel(logging.WARNING)
