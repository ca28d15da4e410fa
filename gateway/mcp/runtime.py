"""How every tool runs: scope check, one audit entry, and errors an agent can act on.

    @gateway_tool(scope="calendar:read", action="mcp.check_availability")
    async def check_availability(call: ToolCall, ...) -> dict: ...

The wrapped function gets the current `ToolCall` (app + principal) and returns plain JSON data;
the wrapper turns it into a CallToolResult (structured content plus the same JSON as text, for
clients that only read text), or a tool error (see gateway.mcp.errors). Every call is audited
like the REST calls: tool name, tenant, integration, outcome code; never arguments or results.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, get_type_hints

from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel, ConfigDict, ValidationError, WithJsonSchema, create_model

from gateway.errors import ProblemError
from gateway.google.errors import GoogleError
from gateway.http.appkeys import AUDIT_KEY
from gateway.http.lookup import google_problem
from gateway.http.validation import validation_problem
from gateway.mcp.context import ToolCall, current_call
from gateway.mcp.errors import ToolFailure

log = logging.getLogger(__name__)

ToolBody = Callable[..., Awaitable[dict[str, Any]]]


def ok_result(data: dict[str, Any]) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=json.dumps(data, default=str))],
        structured_content=data,
    )


def error_result(failure: ToolFailure) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=failure.text())], is_error=True)


def _argument_model(body: ToolBody) -> type[BaseModel]:
    """A model of the tool's arguments (every parameter after the ToolCall), lax so that an
    agent's `30` for a number of minutes in a string still works, strict where the types say
    so (RFC 3339 timestamps)."""
    hints = get_type_hints(body, include_extras=True)
    fields: dict[str, Any] = {}
    for param in list(inspect.signature(body).parameters.values())[1:]:
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (hints[param.name], default)
    return create_model(
        f"{body.__name__}_arguments", __config__=ConfigDict(extra="forbid"), **fields
    )


def _exposed_signature(body: ToolBody, model: type[BaseModel]) -> inspect.Signature:
    """The signature the SDK reads the input schema from: each argument's schema as our model
    states it, but `Any` to the SDK, so that every value reaches our own validation and a
    wrong one becomes our `invalid_field` tool error (naming the argument, never echoing the
    value) instead of the SDK's text."""
    schema = model.model_json_schema()
    if "$defs" in schema:
        raise TypeError(f"{body.__name__}: tool arguments must not need $defs")
    params = []
    for param in list(inspect.signature(body).parameters.values())[1:]:
        exposed = Annotated[Any, WithJsonSchema(schema["properties"][param.name])]
        params.append(param.replace(annotation=exposed))
    return inspect.Signature(params, return_annotation=CallToolResult)


def gateway_tool(
    *, scope: str, action: str
) -> Callable[[ToolBody], Callable[..., Awaitable[CallToolResult]]]:
    """Wrap a tool body (its first parameter is the ToolCall; the rest are the tool's
    arguments, which define its input schema)."""

    def decorate(body: ToolBody) -> Callable[..., Awaitable[CallToolResult]]:
        model = _argument_model(body)

        @functools.wraps(body)
        async def tool(**kwargs: Any) -> CallToolResult:
            # A fresh record of looked-up integrations per tool call.
            call = dataclasses.replace(current_call(), integrations=[])
            try:
                if scope not in call.principal.scopes:
                    raise ToolFailure(
                        "insufficient_scope", f"this API key lacks the {scope} scope", scope=scope
                    )
                try:
                    arguments = model.model_validate(kwargs)
                except ValidationError as exc:
                    raise validation_problem(exc) from None
                values = {name: getattr(arguments, name) for name in type(arguments).model_fields}
                data = await body(call, **values)
                outcome = "ok"
                result = ok_result(data)
            except ToolFailure as failure:
                outcome, result = failure.code, error_result(failure)
            except (ProblemError, GoogleError) as exc:
                problem = google_problem(exc) if isinstance(exc, GoogleError) else exc
                outcome, result = problem.code, error_result(ToolFailure.from_problem(problem))
            except Exception:
                # The SDK answers a generic tool error and logs the trace; the audit says so.
                await _audit(call, action, "internal_error")
                raise
            await _audit(call, action, outcome)
            return result

        # The MCP SDK derives the input schema from the signature: without the ToolCall.
        exposed = _exposed_signature(body, model)
        tool.__signature__ = exposed  # type: ignore[attr-defined]
        tool.__annotations__ = {
            **{p.name: p.annotation for p in exposed.parameters.values()},
            "return": CallToolResult,
        }
        return tool

    return decorate


async def _audit(call: ToolCall, action: str, outcome: str) -> None:
    """One entry per integration of the caller's the call looked up (or one without), like
    the REST calls: tool, tenant, integration, outcome; never arguments or results."""
    audit = call.app.get(AUDIT_KEY)
    if audit is None:
        return
    for integration_id in dict.fromkeys(call.integrations) or [None]:
        await audit.record(
            action,
            outcome,
            tenant_id=call.principal.tenant_id,
            integration_id=integration_id,
            detail={"via": "mcp"},
        )
