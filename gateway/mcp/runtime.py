"""How every tool runs: scope check, one audit entry, and errors an agent can act on.

    @gateway_tool(scope="calendar:read", action="mcp.check_availability")
    async def check_availability(call: ToolCall, ...) -> dict: ...

The wrapped function gets the current `ToolCall` (app + principal) and returns plain JSON data;
the wrapper turns it into a CallToolResult (structured content plus the same JSON as text, for
clients that only read text), or a tool error (see gateway.mcp.errors). Every call is audited
like the REST calls: tool name, tenant, integration, outcome code; never arguments or results.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec

from mcp_types import CallToolResult, TextContent

from gateway.errors import ProblemError
from gateway.google.errors import GoogleError
from gateway.http.appkeys import AUDIT_KEY
from gateway.http.lookup import INTEGRATION_ID, google_problem
from gateway.mcp.context import ToolCall, current_call
from gateway.mcp.errors import ToolFailure

log = logging.getLogger(__name__)

P = ParamSpec("P")
ToolBody = Callable[..., Awaitable[dict[str, Any]]]


def ok_result(data: dict[str, Any]) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=json.dumps(data, default=str))],
        structured_content=data,
    )


def error_result(failure: ToolFailure) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=failure.text())], is_error=True)


def gateway_tool(
    *, scope: str, action: str
) -> Callable[[ToolBody], Callable[..., Awaitable[CallToolResult]]]:
    """Wrap a tool body (its first parameter is the ToolCall; the rest are the tool's
    arguments, which define its input schema)."""

    def decorate(body: ToolBody) -> Callable[..., Awaitable[CallToolResult]]:
        @functools.wraps(body)
        async def tool(*args: Any, **kwargs: Any) -> CallToolResult:
            call = current_call()
            try:
                if scope not in call.principal.scopes:
                    raise ToolFailure(
                        "insufficient_scope", f"this API key lacks the {scope} scope", scope=scope
                    )
                data = await body(call, *args, **kwargs)
                outcome = "ok"
                result = ok_result(data)
            except ToolFailure as failure:
                outcome, result = failure.code, error_result(failure)
            except (ProblemError, GoogleError) as exc:
                problem = google_problem(exc) if isinstance(exc, GoogleError) else exc
                outcome, result = problem.code, error_result(ToolFailure.from_problem(problem))
            except Exception:
                # The SDK answers a generic tool error and logs the trace; the audit says so.
                await _audit(call, action, "internal_error", kwargs)
                raise
            await _audit(call, action, outcome, kwargs)
            return result

        # The MCP SDK derives the input schema from the signature: drop the ToolCall parameter.
        signature = inspect.signature(body)
        params = list(signature.parameters.values())[1:]
        tool.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=params, return_annotation=CallToolResult
        )
        annotations = dict(getattr(body, "__annotations__", {}))
        annotations.pop(next(iter(signature.parameters)), None)
        annotations["return"] = CallToolResult
        tool.__annotations__ = annotations
        return tool

    return decorate


async def _audit(call: ToolCall, action: str, outcome: str, arguments: dict[str, Any]) -> None:
    """One entry per connection the call named (or one without), like the REST calls."""
    audit = call.app.get(AUDIT_KEY)
    if audit is None:
        return
    named: list[str] = []
    if isinstance(arguments.get("connection_id"), str):
        named.append(arguments["connection_id"])
    if isinstance(arguments.get("connection_ids"), list):
        named.extend(i for i in arguments["connection_ids"] if isinstance(i, str))
    for integration_id in dict.fromkeys(named) or [None]:
        await audit.record(
            action,
            outcome,
            tenant_id=call.principal.tenant_id,
            # Unknown ids are the caller's input, not ours: record only well-formed ones.
            integration_id=integration_id
            if integration_id and INTEGRATION_ID.match(integration_id)
            else None,
            detail={"via": "mcp"},
        )
