"""The webhooks package's errors.

    ProblemError (gateway.errors)
    ├── EndpointNotFound     404 webhook_endpoint_not_found: unknown, or another tenant's
    ├── DeliveryNotFound     404 webhook_delivery_not_found
    └── UnsafeDestination    422 unsafe_webhook_url: not https, or resolves to an address in a
                             private, loopback, link-local or metadata range that
                             GATEWAY_WEBHOOK_ALLOWED_NETWORKS does not list

`DestinationRefused` is raised at delivery time for the same reasons (DNS may have changed since
the endpoint was created); the worker records its `code` on the delivery and retries later.
"""

from __future__ import annotations

from gateway.errors import GatewayError, InvalidInput, NotFound


class EndpointNotFound(NotFound):
    code = "webhook_endpoint_not_found"


class DeliveryNotFound(NotFound):
    code = "webhook_delivery_not_found"


class UnsafeDestination(InvalidInput):
    code = "unsafe_webhook_url"


class DestinationRefused(GatewayError):
    """A delivery's destination failed the address check (codes: refused_address,
    unresolvable, insecure_url)."""

    code = "refused_address"
