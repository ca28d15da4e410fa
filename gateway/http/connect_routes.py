"""Wiring of one feature into the app (placeholder until the feature lands)."""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    """Add this feature's services (cleanup contexts) and routes to `app`."""
