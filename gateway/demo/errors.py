"""The demo's error: a step did not get what it needed (the message says which and why)."""

from __future__ import annotations

from gateway.errors import GatewayError


class DemoFailed(GatewayError):
    """A demo step failed; the message is safe to print (no token, no secret)."""

    code = "demo_failed"
