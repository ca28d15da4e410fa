"""Errors of the connections package (connect, keep alive, disconnect).

ProblemError (gateway.errors)
└── IntegrationInactive   409: the integration is not active (needs_reauth, disconnecting,
                          disconnected); Google is not called for it.
                          `extra["integration_status"]` says which state, so the
                          agent can ask the user to reconnect.
"""

from __future__ import annotations

from gateway.connections.model import Status
from gateway.errors import ProblemError


class IntegrationInactive(ProblemError):
    """The integration cannot be used now; `status` is its current state."""

    code = "integration_inactive"
    status = 409
    title = "Conflict"

    def __init__(self, integration_status: Status, *, reason: str | None = None) -> None:
        # `status` is the problem's HTTP status in the rendered body (problem+json keeps its
        # own members), so the integration's state travels as `integration_status`.
        extra: dict[str, object] = {
            "status": integration_status.value,
            "integration_status": integration_status.value,
        }
        if reason is not None:
            extra["reauth_reason"] = reason
        message = (
            "the user must reconnect their Google Calendar"
            if integration_status is Status.NEEDS_REAUTH
            else f"the integration is {integration_status.value}"
        )
        super().__init__(message, extra=extra)
        self.integration_status = integration_status
        self.reason = reason
