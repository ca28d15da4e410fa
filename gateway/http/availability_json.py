"""The JSON of availability answers, as the REST API and the MCP tools give them: free/busy
objects, slots, and a problem of one item of a batch (gateway.http.problems' shape)."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from typing import Any

import orjson

from gateway.availability.service import FreeBusy, SlotsResult
from gateway.availability.spans import Span, rfc3339_us
from gateway.clock import rfc3339
from gateway.errors import GatewayError, ProblemError
from gateway.google.errors import GoogleError
from gateway.http.lookup import google_problem
from gateway.http.problems import PROBLEM_TYPE_BASE


def _spans(spans: Sequence[Span]) -> list[dict[str, str]]:
    return [{"start": rfc3339_us(s), "end": rfc3339_us(e)} for s, e in spans]


@functools.lru_cache(maxsize=1 << 15)
def _span_json(start_us: int, end_us: int) -> bytes:
    return orjson.dumps({"start": rfc3339_us(start_us), "end": rfc3339_us(end_us)})


def _spans_json(spans: Sequence[Span]) -> orjson.Fragment:
    """`_spans` already encoded, for orjson to copy into the body. A calendar's blocks come
    back request after request, so each block's JSON is remembered (a bounded cache of a pure
    function): encoding a week's busy list was a third of a warm request's CPU."""
    return orjson.Fragment(b"[" + b",".join(itertools.starmap(_span_json, spans)) + b"]")


def _ts(value: Any) -> str | None:
    return rfc3339(value) if value is not None else None


def _how_known(answer: FreeBusy) -> dict[str, Any]:
    """Where the answer came from, how fresh and complete it is, per calendar."""
    calendars: dict[str, Any] = {}
    for c in answer.calendars:
        entry: dict[str, Any] = {"state": c.state, "as_of": _ts(c.as_of), "source": c.source}
        if c.error is not None:
            entry["error"] = c.error
        calendars[c.calendar_id] = entry
    return {
        "source": answer.source,
        "as_of": _ts(answer.as_of),
        "complete": answer.complete,
        "calendars": calendars,
    }


def render_freebusy(answer: FreeBusy, *, encoded: bool = False) -> dict[str, Any]:
    """The free/busy object of the API. `encoded`: its busy list as an orjson.Fragment, for
    `json_response` only (the MCP tools need plain values)."""
    known = _how_known(answer)
    return {
        "integration_id": answer.integration_id,
        "time_min": rfc3339(answer.window.start),
        "time_max": rfc3339(answer.window.end),
        "busy": _spans_json(answer.busy_us) if encoded else _spans(answer.busy_us),
        "as_of": known["as_of"],
        "source": known["source"],
        "complete": known["complete"],
        "calendars": known["calendars"],
    }


def as_problem(exc: GatewayError) -> ProblemError:
    """The problem an item of a batch answers with for `exc`."""
    if isinstance(exc, ProblemError):
        return exc
    if isinstance(exc, GoogleError):
        return google_problem(exc)
    return ProblemError("the gateway could not answer for this integration", code=exc.code)


def render_problem(exc: ProblemError) -> dict[str, Any]:
    """The problem+json body (gateway.http.problems) of `exc`, for one item of a batch."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + exc.code,
        "title": exc.title,
        "status": exc.status,
        "detail": exc.message,
        "code": exc.code,
    }
    body.update({k: v for k, v in exc.extra.items() if k not in body})
    return body


def render_slots(result: SlotsResult) -> dict[str, Any]:
    """Slots, completeness and per integration how its availability was known."""
    availability: dict[str, Any] = {}
    for integration_id, outcome in result.availability.items():
        if isinstance(outcome, FreeBusy):
            availability[integration_id] = _how_known(outcome)
        else:
            availability[integration_id] = {
                "complete": False,
                "problem": render_problem(google_problem(outcome)),
            }
    answer = result.answer
    return {
        "slots": [
            {"start": rfc3339(s.start), "end": rfc3339(s.end), "integration_ids": list(s.people)}
            for s in answer.slots
        ],
        "complete": answer.complete,
        "incomplete_integration_ids": list(answer.incomplete_people),
        "integrations": availability,
    }
