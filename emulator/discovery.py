"""Request and response checking against the Calendar v3 discovery document.

The document shipped inside google-api-python-client (`calendar.v3.json`) is the authority for
method paths, parameter names, types, enums, bounds and resource schemas. It is read once, lazily
(`load_discovery()`; the app preloads it off the event loop at startup), never at import time.

Choices where Google's exact behaviour is not documented (kept strict so client bugs surface):
- Unknown query parameters are refused with the ESF wording Google uses for unbindable
  parameters (`Unknown name "x": Cannot bind query parameter...`, reason `invalid`).
- A non-repeated parameter given twice is refused (`invalidParameter`).
- Unknown fields in JSON bodies are tolerated and dropped, as Google's JSON reader ignores them;
  wrong JSON types and malformed date/date-time strings are refused (`invalid`), the latter with
  Google's Joda wording seen in real recordings.
- `maxResults` above Google's documented page cap is not an error (Google caps silently); values
  outside the discovery `minimum`/`maximum` are (`invalidParameter`, `Values must be within the
  range`).
"""

from __future__ import annotations

import importlib.util
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multidict import MultiMapping

from emulator.errors import GoogleApiError
from emulator.recurrence import TimeValueError, parse_date, parse_datetime

Json = dict[str, Any]

# Parameters every Google API accepts on top of the discovery document's global `parameters`.
EXTRA_GLOBAL_PARAMETERS = frozenset(
    {"access_token", "callback", "upload_protocol", "uploadType", "$.xgafv", "alt", "fields"}
)


@dataclass(frozen=True)
class MethodSpec:
    """One discovery method: `id` like `calendar.events.list`, its path regex and schemas."""

    id: str
    http_method: str
    path: str
    pattern: re.Pattern[str]
    parameters: Mapping[str, Json]
    request_schema: str | None
    response_schema: str | None
    scopes: frozenset[str]

    @property
    def name(self) -> str:
        """`events.list` style (the method id without the `calendar.` prefix)."""
        return self.id.removeprefix("calendar.")


def param_error(reason: str, message: str, name: str) -> GoogleApiError:
    return GoogleApiError(400, reason, message, location=name, location_type="parameter")


def body_error(message: str) -> GoogleApiError:
    return GoogleApiError(400, "invalid", message)


class Discovery:
    """The parsed discovery document with matching and validation helpers."""

    def __init__(self, document: Json) -> None:
        self.document = document
        self.schemas: Mapping[str, Json] = document["schemas"]
        self.global_parameters = frozenset(document.get("parameters", {})) | EXTRA_GLOBAL_PARAMETERS
        methods: list[MethodSpec] = []
        self._collect(document.get("resources", {}), methods)
        # Literal paths win over templated ones (`events/watch` before `events/{eventId}`).
        methods.sort(key=lambda m: m.path.count("{"))
        self.methods = methods
        self.by_id = {m.id: m for m in methods}

    def _collect(self, resources: Mapping[str, Json], out: list[MethodSpec]) -> None:
        for resource in resources.values():
            for method in resource.get("methods", {}).values():
                regex = "".join(
                    f"(?P<{part[1:-1]}>[^/]+)" if part.startswith("{") else re.escape(part)
                    for part in re.split(r"(\{[^}]+\})", method["path"])
                )
                out.append(
                    MethodSpec(
                        id=method["id"],
                        http_method=method["httpMethod"],
                        path=method["path"],
                        pattern=re.compile(regex + "$"),
                        parameters=method.get("parameters", {}),
                        request_schema=(method.get("request") or {}).get("$ref"),
                        response_schema=(method.get("response") or {}).get("$ref"),
                        scopes=frozenset(method.get("scopes", [])),
                    )
                )
            self._collect(resource.get("resources", {}), out)

    def match(self, http_method: str, rel_path: str) -> tuple[MethodSpec, dict[str, str]] | None:
        """The method for `rel_path` (relative to `/calendar/v3/`, still percent-encoded) and its
        decoded path parameters; None when no method has that path and verb."""
        from urllib.parse import unquote

        for spec in self.methods:
            if spec.http_method != http_method:
                continue
            m = spec.pattern.match(rel_path)
            if m is not None:
                return spec, {k: unquote(v) for k, v in m.groupdict().items()}
        return None

    # ------------------------------------------------------------------ parameters

    def check_parameters(
        self, spec: MethodSpec, query: MultiMapping[str], path_params: Mapping[str, str]
    ) -> dict[str, Any]:
        """Typed values of the request's parameters; Google's 400 for anything malformed."""
        values: dict[str, Any] = {}
        for name in query:
            known = spec.parameters.get(name)
            if name in self.global_parameters:
                if name == "alt" and query[name] != "json":
                    raise param_error(
                        "invalidParameter",
                        f"Invalid string value: '{query[name]}'. Allowed values: [json]",
                        name,
                    )
                if name == "prettyPrint":
                    values[name] = self._convert(name, {"type": "boolean"}, query[name])
                elif name == "fields":
                    values[name] = query[name]
                continue
            if known is None or known.get("location") != "query":
                raise GoogleApiError(
                    400,
                    "invalid",
                    f'Invalid JSON payload received. Unknown name "{name}": Cannot bind query '
                    f"parameter. Field '{name}' could not be found in request message.",
                    location=name,
                    location_type="parameter",
                )
        for name, schema in spec.parameters.items():
            if schema.get("location") == "path":
                raw_path = path_params.get(name, "")
                if not raw_path:
                    raise param_error("required", f"Required parameter: {name}", name)
                values[name] = raw_path
                continue
            raw = query.getall(name, [])
            if not raw:
                if schema.get("required"):
                    raise param_error("required", f"Required parameter: {name}", name)
                continue
            if schema.get("repeated"):
                values[name] = [self._convert(name, schema, v) for v in raw]
            elif len(raw) > 1:
                raise param_error(
                    "invalidParameter", f"Multiple values given for parameter: {name}", name
                )
            else:
                values[name] = self._convert(name, schema, raw[0])
        return values

    def _convert(self, name: str, schema: Json, raw: str) -> Any:
        kind = schema.get("type")
        if kind == "boolean":
            if raw not in ("true", "false"):
                raise param_error("invalidParameter", f"Invalid boolean value: '{raw}'.", name)
            return raw == "true"
        if kind == "integer":
            if not re.fullmatch(r"[+-]?\d+", raw):
                raise param_error(
                    "invalidParameter",
                    f"Invalid value '{raw}'. Values must match the following regular "
                    "expression: '[+-]?\\d+'",
                    name,
                )
            number = int(raw)
            low, high = schema.get("minimum"), schema.get("maximum")
            if (low is not None and number < int(low)) or (high is not None and number > int(high)):
                bounds = f"[{low if low is not None else ''}, {high if high is not None else ''}]"
                raise param_error(
                    "invalidParameter",
                    f"Invalid value '{raw}'. Values must be within the range: {bounds}",
                    name,
                )
            return number
        if "enum" in schema and raw not in schema["enum"]:
            allowed = ", ".join(schema["enum"])
            raise param_error(
                "invalidParameter",
                f"Invalid string value: '{raw}'. Allowed values: [{allowed}]",
                name,
            )
        if schema.get("format") == "date-time":
            try:
                return parse_datetime(raw)
            except TimeValueError as exc:
                raise param_error("invalid", f"Invalid value for: {exc.message}", name) from exc
        return raw

    # ------------------------------------------------------------------ bodies

    def check_body(self, schema_name: str, body: Any) -> Json:
        """A copy of `body` without unknown fields; Google's 400 for wrong types or formats."""
        if not isinstance(body, dict):
            raise GoogleApiError(400, "parseError", "Parse Error")
        cleaned = self._check_value({"$ref": schema_name}, body, "")
        assert isinstance(cleaned, dict)
        return cleaned

    def _check_value(self, schema: Json, value: Any, path: str) -> Any:
        if "$ref" in schema:
            schema = self.schemas[schema["$ref"]]
        if value is None:
            return None
        kind = schema.get("type")

        def wrong(type_name: str) -> GoogleApiError:
            return body_error(
                f"Invalid value at '{path or 'resource'}' ({type_name}), {json.dumps(value)}"
            )

        if kind == "object" or "properties" in schema:
            if not isinstance(value, dict):
                raise wrong("TYPE_MESSAGE")
            out: Json = {}
            props = schema.get("properties", {})
            extra = schema.get("additionalProperties")
            for key, item in value.items():
                child = f"{path}.{key}" if path else key
                if key in props:
                    out[key] = self._check_value(props[key], item, child)
                elif extra is not None:
                    out[key] = self._check_value(extra, item, child)
            return out
        if kind == "array":
            if not isinstance(value, list):
                raise wrong("TYPE_LIST")
            items = schema.get("items", {})
            return [self._check_value(items, v, f"{path}[{i}]") for i, v in enumerate(value)]
        if kind == "string":
            fmt = schema.get("format")
            if (
                fmt in ("int64", "uint64")
                and isinstance(value, int)
                and not isinstance(value, bool)
            ):
                return str(value)
            if not isinstance(value, str):
                raise wrong("TYPE_STRING")
            try:
                if fmt == "date-time":
                    parse_datetime(value, offset_required=False)
                elif fmt == "date":
                    parse_date(value)
            except TimeValueError as exc:
                raise body_error(f"Invalid value for: {exc.message}") from exc
            if fmt in ("int64", "uint64") and not re.fullmatch(r"-?\d+", value):
                raise wrong("TYPE_INT64")
            return value
        if kind == "integer":
            if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
                return int(value)
            if not isinstance(value, int) or isinstance(value, bool):
                raise wrong("TYPE_INT32")
            return value
        if kind == "number":
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise wrong("TYPE_DOUBLE")
            return value
        if kind == "boolean":
            if not isinstance(value, bool):
                raise wrong("TYPE_BOOL")
            return value
        return value

    # ------------------------------------------------------------------ responses

    def response_problems(self, schema_name: str, value: Any) -> list[str]:
        """Everything in a response that the schema does not allow (unknown fields included).
        Empty means the response is well-formed; tests assert on it."""
        problems: list[str] = []
        self._walk({"$ref": schema_name}, value, schema_name, problems)
        return problems

    def _walk(self, schema: Json, value: Any, path: str, problems: list[str]) -> None:
        if "$ref" in schema:
            schema = self.schemas[schema["$ref"]]
        kind = schema.get("type")
        if kind == "object" or "properties" in schema:
            if not isinstance(value, dict):
                problems.append(f"{path}: expected object, got {type(value).__name__}")
                return
            props = schema.get("properties", {})
            extra = schema.get("additionalProperties")
            for key, item in value.items():
                if key in props:
                    self._walk(props[key], item, f"{path}.{key}", problems)
                elif extra is not None:
                    self._walk(extra, item, f"{path}.{key}", problems)
                else:
                    problems.append(f"{path}.{key}: not in schema")
        elif kind == "array":
            if not isinstance(value, list):
                problems.append(f"{path}: expected array")
                return
            for i, item in enumerate(value):
                self._walk(schema.get("items", {}), item, f"{path}[{i}]", problems)
        elif kind == "string":
            if not isinstance(value, str):
                problems.append(f"{path}: expected string, got {type(value).__name__}")
                return
            fmt = schema.get("format")
            try:
                if fmt == "date-time":
                    parse_datetime(value)
                elif fmt == "date":
                    parse_date(value)
                elif fmt in ("int64", "uint64") and not re.fullmatch(r"-?\d+", value):
                    problems.append(f"{path}: expected {fmt} string")
            except TimeValueError as exc:
                problems.append(f"{path}: {exc.message}")
            if "enum" in schema and value not in schema["enum"]:
                problems.append(f"{path}: {value!r} not in enum")
        elif kind == "integer":
            if not isinstance(value, int) or isinstance(value, bool):
                problems.append(f"{path}: expected integer")
        elif kind == "boolean" and not isinstance(value, bool):
            problems.append(f"{path}: expected boolean")


def discovery_document_path() -> Path:
    """Where the installed google-api-python-client keeps calendar.v3.json (found without
    importing the client)."""
    spec = importlib.util.find_spec("googleapiclient")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("google-api-python-client is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    return root / "discovery_cache" / "documents" / "calendar.v3.json"


_lock = threading.Lock()
_loaded: list[Discovery] = []


def load_discovery() -> Discovery:
    """The Calendar v3 discovery document, parsed on first use and then shared (it is
    read-only). Blocking file I/O: from async code call it via `asyncio.to_thread` first."""
    with _lock:
        if not _loaded:
            text = discovery_document_path().read_text(encoding="utf-8")
            _loaded.append(Discovery(json.loads(text)))
        return _loaded[0]


def loaded_discovery() -> Discovery | None:
    """The discovery document if `load_discovery` already ran (no I/O)."""
    return _loaded[0] if _loaded else None
