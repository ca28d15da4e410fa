"""The OpenAPI document in the repo is what /openapi.json serves, and matches the routes."""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.app import create_app
from gateway.settings import load_settings

DOC = Path(__file__).resolve().parents[2] / "gateway" / "openapi.json"


async def test_served_document_is_the_file_and_covers_every_route(
    engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    settings = load_settings(
        env_file=None, database_url=database_url, kek_uri=f"file:{tmp_path / 'k.json'}"
    )
    app = create_app(settings, engine=engine)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/openapi.json")
        assert response.status == 200
        served = await response.json()
    document = json.loads(DOC.read_text())
    assert served == document
    assert document["openapi"].startswith("3.1")

    routes = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = {
        (method, path)
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }
    assert routes == documented
