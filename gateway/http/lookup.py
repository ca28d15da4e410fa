"""What every `/v1/integrations/{integration_id}/...` handler needs first, in one place.

    integration = await integration_for(request)          # 404 unless it is the caller's
    integration = await usable_integration_for(request)   # and 409 integration_inactive
                                                          # unless it is active
    raise google_problem(exc)                             # a GoogleError as the agent sees it

Another tenant's integration is 404, exactly like one that does not exist, so ids cannot be
probed across tenants.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import TypeVar

from aiohttp import web

from gateway.availability.service import AvailabilityService, parse_staleness
from gateway.connections.errors import IntegrationInactive
from gateway.connections.model import Integration
from gateway.errors import Forbidden, NotFound, ProblemError
from gateway.google.errors import (
    GoogleError,
    GoogleNotFound,
    InsufficientScope,
    RateLimited,
    TransientGoogleError,
)
from gateway.http.appkeys import AVAILABILITY_KEY, INTEGRATIONS_KEY, SETTINGS_KEY
from gateway.http.auth import principal

S = TypeVar("S")

INTEGRATION_ID = re.compile(r"^int_[0-9a-f]{24}$")

# When Google rate-limits without saying for how long: its documented backoff starts at ~1 s
# and an agent retrying sooner than a few seconds only burns the same user's quota.
DEFAULT_RETRY_AFTER_S = 5


async def tenant_integration(
    app: web.Application, tenant_id: str, integration_id: str
) -> Integration:
    """Integration `integration_id` of `tenant_id`, or 404 (also for another tenant's)."""
    found = (
        await app[INTEGRATIONS_KEY].get(tenant_id, integration_id)
        if INTEGRATION_ID.match(integration_id)
        else None
    )
    if found is None:
        raise NotFound("no such integration", code="integration_not_found")
    return found


async def integration_by_id(request: web.Request, integration_id: str) -> Integration:
    """The caller's integration `integration_id`, or 404 (also for another tenant's)."""
    return await tenant_integration(request.app, principal(request).tenant_id, integration_id)


async def integrations_by_ids(
    request: web.Request, integration_ids: list[str]
) -> list[Integration | NotFound]:
    """`integration_by_id` of each id, in order, from one query: the integration, or the 404
    that id would get."""
    wanted = [i for i in integration_ids if INTEGRATION_ID.match(i)]
    found = await request.app[INTEGRATIONS_KEY].get_many(principal(request).tenant_id, wanted)
    return [
        found.get(i) or NotFound("no such integration", code="integration_not_found")
        for i in integration_ids
    ]


async def integration_for(request: web.Request) -> Integration:
    """The caller's integration named in the path, or 404 (also for another tenant's)."""
    return await integration_by_id(request, request.match_info["integration_id"])


def require_usable(integration: Integration) -> Integration:
    """409 integration_inactive (with its status) unless Google may be called for it."""
    if not integration.usable:
        raise IntegrationInactive(integration.status, reason=integration.reauth_reason)
    return integration


async def usable_integration_for(request: web.Request) -> Integration:
    """`integration_for`, then 409 integration_inactive unless it is active."""
    return require_usable(await integration_for(request))


def google_problem(exc: GoogleError) -> ProblemError:
    """How a Google failure reaches the agent: never a 500, never Google's message text.

    rate limited -> 503 rate_limited with Retry-After (Google's, else a default);
    other transient failures -> 503 google_unavailable; missing scope -> 403
    insufficient_google_scope (the user must grant more); not found -> 404; anything else
    -> 502 google_error with Google's reason code.
    """
    if isinstance(exc, TransientGoogleError):
        retry = exc.retry_after_s if exc.retry_after_s is not None else DEFAULT_RETRY_AFTER_S
        seconds = str(max(1, math.ceil(retry)))
        if isinstance(exc, RateLimited):
            return ProblemError(
                "Google is rate limiting this calendar; retry after the delay given",
                code="rate_limited",
                status=503,
                title="Service Unavailable",
                extra={"retry_after_s": int(seconds)},
                headers={"Retry-After": seconds},
            )
        return ProblemError(
            "Google is temporarily unavailable; retry after the delay given",
            code="google_unavailable",
            status=503,
            title="Service Unavailable",
            extra={"retry_after_s": int(seconds)},
            headers={"Retry-After": seconds},
        )
    if isinstance(exc, InsufficientScope):
        return Forbidden(
            "the user did not grant the calendar permission this operation needs",
            code="insufficient_google_scope",
        )
    if isinstance(exc, GoogleNotFound):
        return NotFound("Google does not know this calendar or event", code="google_not_found")
    return ProblemError(
        "Google refused the request",
        code="google_error",
        status=502,
        title="Bad Gateway",
        extra={"google_reason": exc.google_error or exc.code},
    )


def google_service(app: web.Application, key: web.AppKey[S]) -> S:
    """A service that needs Google (availability, booking: absent when no OAuth client is
    configured), or 503 google_not_configured."""
    service = app.get(key)
    if service is None:
        raise ProblemError(
            "no Google OAuth client is configured on this gateway",
            code="google_not_configured",
            status=503,
            title="Service Unavailable",
        )
    return service


def availability_service(app: web.Application) -> AvailabilityService:
    """The app's AvailabilityService, or 503 google_not_configured."""
    return google_service(app, AVAILABILITY_KEY)


def staleness(app: web.Application, max_staleness_s: int | None) -> timedelta:
    """The caller's `max_staleness_s`, else the configured default (422 out of range)."""
    default = timedelta(seconds=app[SETTINGS_KEY].freebusy_max_staleness_s)
    return parse_staleness(max_staleness_s, default)
