"""The baseline server of `bench api`: one bare aiohttp handler, no middleware, no database.

    python -m gateway.bench.bare --port 8099

Answers `GET /` with a small JSON body (about the size of a one-week free/busy answer's
envelope) and `GET /healthz`. What the gateway's free/busy costs is read against it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from aiohttp import web

BODY = {
    "integration_id": "int_000000000000000000000000",
    "busy": [{"start": "2026-01-05T09:00:00Z", "end": "2026-01-05T10:00:00Z"}],
    "complete": True,
}


async def handler(_request: web.Request) -> web.Response:
    return web.json_response(BODY)


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/", handler)
    app.router.add_get("/healthz", handler)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.bench.bare")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    web.run_app(make_app(), host=args.host, port=args.port, access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
