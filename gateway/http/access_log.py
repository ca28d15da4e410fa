"""Access log lines without query strings.

aiohttp's default access log prints the request line, query string included. On
`/oauth/google/callback` that is the authorization code and the OAuth state: secrets. The
gateway logs method, path, status, size and duration only.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from gateway.http.request_id import HEADER


class PathOnlyAccessLogger(AbstractAccessLogger):
    """`GET /v1/integrations/int_x 200 512B 3.1ms`: never the query string or headers.

    The line is written after the request-id middleware has unbound the id, so it carries the
    id the answer was sent with (`X-Request-ID`), like every other line of the request."""

    @property
    def enabled(self) -> bool:
        # aiohttp asks once per connection and then skips `log` (and timing the request)
        # altogether when the line would not be written (GATEWAY_LOG_LEVEL above INFO).
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %d %dB %.1fms",
            request.method,
            request.path,
            response.status,
            response.body_length,
            time * 1000,
            extra={"request_id": response.headers.get(HEADER)},
        )
