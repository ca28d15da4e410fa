"""Google's error shapes: the Calendar API envelope and the OAuth token-endpoint body."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


class GoogleApiError(Exception):
    """An error answered in Google's JSON envelope:

    {"error": {"code": N, "message": m, "errors": [{"domain", "reason", "message",
     "locationType"?, "location"?}], "status"?}}

    `status` (a canonical name such as UNAUTHENTICATED) is only present where Google's
    authentication front-end answers (401, insufficient scopes); the Calendar backend's own
    errors (400, 404, 409, 410, 412, rate limits) carry none, as in the recorded responses
    and the exact 410 body in google-wire.md.
    """

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        domain: str = "global",
        location: str | None = None,
        location_type: str | None = None,
        headers: dict[str, str] | None = None,
        status: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.reason = reason
        self.message = message
        self.domain = domain
        self.location = location
        self.location_type = location_type
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "domain": self.domain,
            "reason": self.reason,
            "message": self.message,
        }
        if self.location_type is not None:
            item["locationType"] = self.location_type
        if self.location is not None:
            item["location"] = self.location
        error: dict[str, Any] = {"errors": [item], "code": self.code, "message": self.message}
        if self.status is not None:
            error["status"] = self.status
        return {"error": error}

    def to_response(self) -> web.Response:
        headers = (
            {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'}
            if self.code == 401
            else {}
        )
        headers.update(self.headers)
        return web.Response(
            status=self.code,
            text=json.dumps(self.body(), indent=1),
            content_type="application/json",
            charset="UTF-8",
            headers=headers,
        )


def invalid_credentials() -> GoogleApiError:
    """401 for a missing, malformed, expired or revoked access token."""
    return GoogleApiError(
        401,
        "authError",
        "Invalid Credentials",
        location="Authorization",
        location_type="header",
        status="UNAUTHENTICATED",
    )


def insufficient_scope() -> GoogleApiError:
    return GoogleApiError(
        403,
        "insufficientPermissions",
        "Request had insufficient authentication scopes.",
        status="PERMISSION_DENIED",
    )


class OAuthError(Exception):
    """An OAuth endpoint error: {"error": code, "error_description": description}."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description

    def to_response(self) -> web.Response:
        return web.json_response(
            {"error": self.error, "error_description": self.description},
            status=self.status,
            headers={"Cache-Control": "no-cache, no-store, max-age=0, must-revalidate"},
        )
