"""Strict request parsing for the whole API: JSON bodies and query strings into pydantic models.

    class CreateThing(StrictBody):
        user_id: UserText
        starts_at: Rfc3339

    body = await read_json(request, CreateThing)        # in a handler
    query = parse_query(request.query, ListThings)

Models derive from `StrictBody` (unknown fields refused, no type coercion: `"5"` is not 5 and
`true` is not 1). Every failure is a ProblemError that names the field, never a 500 and never
an echo of the value sent (a caller may have put a secret in the wrong field):

    status  code                     when
    ------  -----------------------  ----------------------------------------------------
    415     unsupported_media_type   Content-Type is not application/json
    413     payload_too_large        body larger than `max_bytes` (the app caps it too)
    400     malformed_json           empty, not UTF-8, not JSON, NaN/Infinity
    422     invalid_body             the JSON is not an object
    422     duplicate_field          a key given twice (JSON object or query string)
    422     unknown_field            a field the model does not have
    422     missing_field            a required field absent
    422     invalid_field            wrong type, out of range, bad timestamp, ...

The problem's `detail` is "<field>: <message>" for the first error (e.g. "user_id: field
required"); `field` is that field's path, and `errors` lists every error as
{"field", "code", "message"}.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from aiohttp import web
from multidict import MultiMapping
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError

from gateway.errors import InvalidInput, ProblemError

MAX_JSON_BYTES = 64 * 1024
_MAX_REPORTED_ERRORS = 10

M = TypeVar("M", bound=BaseModel)


class StrictBody(BaseModel):
    """Base of request models: unknown fields refused, strict types, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# -- field types ------------------------------------------------------------------------------

# RFC 3339 date-time with a mandatory offset (`Z` or `+hh:mm`); seconds required, fraction
# optional. Stricter than pydantic's own datetime parsing, which also takes dates, bare numbers
# and times without an offset.
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


def parse_rfc3339(value: object) -> datetime:
    """An aware datetime from an RFC 3339 string with an offset, else ValueError."""
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError(
            "must be an RFC 3339 timestamp with an offset, such as 2026-01-31T09:00:00Z"
        )
    text = value.upper()
    # fromisoformat takes at most 6 fractional digits; RFC 3339 allows more.
    head, dot, tail = text.partition(".")
    if dot:
        digits = re.match(r"\d+", tail)
        assert digits is not None
        text = f"{head}.{digits[0][:6].ljust(6, '0')}{tail[digits.end() :]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("is not a valid date and time") from None
    try:
        parsed.astimezone(UTC)  # every consumer works in UTC
    except OverflowError:
        # 0001-01-01T00:00:00+01:00 is well formed, but its UTC falls in year 0.
        raise ValueError("is not a valid date and time (out of range in UTC)") from None
    return parsed


def _no_control_chars(value: str) -> str:
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in value):
        raise ValueError("must not contain control characters")
    return value


Rfc3339 = Annotated[datetime, BeforeValidator(parse_rfc3339)]
"""A timestamp field: RFC 3339 with an offset, parsed to an aware datetime."""

PrintableText = Annotated[str, AfterValidator(_no_control_chars)]
"""A string without control characters (add length limits with `Field`)."""


# -- parsing ----------------------------------------------------------------------------------


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _malformed(message: str) -> InvalidInput:
    return InvalidInput(
        f"request body: {message}", code="malformed_json", status=400, title="Bad Request"
    )


def parse_json(raw: bytes, model: type[M]) -> M:
    """Parse a JSON document into `model` (pure: what `read_json` does after reading)."""
    if not raw.strip():
        raise _malformed("empty; expected a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed("not valid UTF-8") from None
    try:
        data = json.loads(text, object_pairs_hook=_unique_object, parse_constant=_refuse_constant)
    except _DuplicateKey as exc:
        raise InvalidInput(
            f"{exc.key}: given more than once",
            code="duplicate_field",
            extra={"field": exc.key},
        ) from None
    except json.JSONDecodeError as exc:
        raise _malformed(
            f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise _malformed(str(exc) if isinstance(exc, ValueError) else "nested too deeply") from None
    if not isinstance(data, dict):
        raise InvalidInput("request body: expected a JSON object", code="invalid_body")
    return validate(model, data)


def validate(model: type[M], data: Mapping[str, Any], *, strict: bool | None = None) -> M:
    """`model.model_validate(data)`, with a ValidationError turned into a 422 naming the field."""
    try:
        return model.model_validate(data, strict=strict)
    except ValidationError as exc:
        raise validation_problem(exc) from None


async def read_json(request: web.Request, model: type[M], *, max_bytes: int = MAX_JSON_BYTES) -> M:
    """Read the request body as JSON into `model` (415, 413, 400 or 422 problems otherwise)."""
    if request.content_type != "application/json":
        raise ProblemError(
            "Content-Type must be application/json",
            code="unsupported_media_type",
            status=415,
            title="Unsupported Media Type",
        )
    too_large = ProblemError(
        f"request body is larger than {max_bytes} bytes",
        code="payload_too_large",
        status=413,
        title="Content Too Large",
    )
    if request.content_length is not None and request.content_length > max_bytes:
        raise too_large
    raw = await request.read()  # aiohttp itself refuses more than the app's client_max_size
    if len(raw) > max_bytes:
        raise too_large
    return parse_json(raw, model)


def parse_query(query: MultiMapping[str], model: type[M]) -> M:
    """Validate a query string into `model`: unknown and repeated parameters are refused.

    Values arrive as strings, so numbers and booleans are converted (lax mode); everything
    else about the model (unknown fields, constraints) applies as for bodies.
    """
    data: dict[str, str] = {}
    for key, value in query.items():
        if key in data or len(query.getall(key)) > 1:
            raise InvalidInput(
                f"{key}: given more than once", code="duplicate_field", extra={"field": key}
            )
        data[key] = value
    return validate(model, data, strict=False)


# -- errors -----------------------------------------------------------------------------------


def field_path(loc: Sequence[int | str]) -> str:
    """`("items", 0, "id")` -> `items[0].id`; the empty path is the body itself."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "request body"


def _error_code(error_type: str) -> str:
    if error_type == "extra_forbidden":
        return "unknown_field"
    if error_type == "missing":
        return "missing_field"
    return "invalid_field"


def _message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "field required"
    message = str(error["msg"]).removeprefix("Value error, ")
    return message[:1].lower() + message[1:]


def validation_problem(exc: ValidationError) -> InvalidInput:
    """A 422 problem for a pydantic ValidationError: the first error in `detail` and `code`,
    all of them in `errors`. Never includes the input values."""
    # include_input=False: the value sent never reaches the problem (it may be a secret).
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    listed = [
        {
            "field": field_path(e["loc"]),
            "code": _error_code(e["type"]),
            "message": _message(e),
        }
        for e in errors[:_MAX_REPORTED_ERRORS]
    ]
    first = (
        listed[0]
        if listed
        else {"field": "request body", "code": "invalid_body", "message": "invalid"}
    )
    return InvalidInput(
        f"{first['field']}: {first['message']}",
        code=first["code"],
        extra={"field": first["field"], "errors": listed},
    )
