"""Log lines never carry query strings (OAuth codes and states travel in them)."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.http.access_log import PathOnlyAccessLogger
from tests.support.stack import LogCapture, assert_no_secret_logged


async def _ok(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def test_access_log_has_the_path_but_not_the_query() -> None:
    app = web.Application()
    app.router.add_get("/oauth/google/callback", _ok)
    capture = LogCapture()
    logger = logging.getLogger("aiohttp.access")
    logger.addHandler(capture)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        server = TestServer(app)
        await server.start_server(access_log_class=PathOnlyAccessLogger)
        async with TestClient(server) as client:
            response = await client.get("/oauth/google/callback?code=4/0Asecretcode&state=s3cr3t")
            assert response.status == 200
    finally:
        logger.removeHandler(capture)
        logger.setLevel(previous)
    lines = [line for line in capture.lines if "/oauth/google/callback" in line]
    assert lines == [lines[0]] and "GET /oauth/google/callback 200" in lines[0]
    assert "4/0Asecretcode" not in lines[0]
    assert "s3cr3t" not in lines[0]


def test_the_log_scan_finds_a_leaked_token() -> None:
    secret = "ya29.emu-0123456789abcdef"
    assert_no_secret_logged(["gateway INFO refreshed integration int_1"], {secret})
    with pytest.raises(AssertionError, match="secrets in log lines"):
        assert_no_secret_logged([f"gateway DEBUG got token {secret}"], {secret})
