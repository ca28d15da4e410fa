"""`/mcp`: the MCP server (gateway.mcp) over streamable HTTP, inside the gateway's own app.

The official SDK serves MCP as an ASGI (Starlette) app; aiohttp-asgi bridges one aiohttp
request into it. Before the bridge, the caller's API key is checked exactly like the REST API
(`Authorization: Bearer cgw_...`, 401 problem+json otherwise); each tool then checks its own
scope. The server runs stateless with JSON answers: every HTTP request carries one complete
exchange, so any gateway process behind a load balancer can answer it and the caller's
identity (a context variable) reaches the tool within the request's own task.

Host/Origin checks (DNS-rebinding protection of the SDK) allow GATEWAY_PUBLIC_URL's host and
loopback: a browser page elsewhere cannot drive a local gateway.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp_asgi import ASGIResource
from aiohttp_asgi.resource import ASGIContext
from mcp.server.transport_security import TransportSecuritySettings

from gateway.errors import ProblemError
from gateway.http.appkeys import SETTINGS_KEY
from gateway.http.auth import authenticate
from gateway.livecalls import caller_bound
from gateway.mcp.context import calling
from gateway.mcp.server import build_mcp_server

MCP_PATH = "/mcp"
# Tool arguments are small; the REST API's limit applies here too.
MAX_BODY_BYTES = 64 * 1024

_LOOPBACK_HOSTS = ["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost", "[::1]"]
_LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]


def _security(public_url: str) -> TransportSecuritySettings:
    parts = urlsplit(public_url)
    hosts, origins = list(_LOOPBACK_HOSTS), list(_LOOPBACK_ORIGINS)
    if parts.netloc:
        hosts.append(parts.netloc)
        origins.append(f"{parts.scheme}://{parts.netloc}")
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )


def _version() -> str:
    try:
        return version("calendar-gateway")
    except PackageNotFoundError:  # running from a source tree without installing
        return ""


def setup(app: web.Application) -> None:
    """Serve the MCP tools at POST /mcp. Stateless, the server offers no server-initiated
    stream (GET) and no session to end (DELETE): both answer 405, as the transport allows."""
    server = build_mcp_server(_version())
    asgi = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        stateless_http=True,
        json_response=True,
        max_request_body_size=MAX_BODY_BYTES,
        transport_security=_security(app[SETTINGS_KEY].public_url),
    )

    async def mcp_endpoint(request: web.Request) -> web.StreamResponse:
        who = await authenticate(request)
        # The SDK answers these two mistakes in plain text; ours are problem+json like the rest.
        if request.content_type != "application/json":
            raise ProblemError(
                "send the JSON-RPC message as application/json",
                code="unsupported_media_type",
                status=415,
                title="Unsupported Media Type",
            )
        accept = request.headers.get("Accept", "")
        if "application/json" not in accept or "text/event-stream" not in accept:
            raise ProblemError(
                "MCP clients must accept application/json and text/event-stream",
                code="not_acceptable",
                status=406,
                title="Not Acceptable",
            )
        with calling(request.app, who), caller_bound(who.tenant_id, who.key_id):
            return await ASGIContext(asgi, request, "").get_response()

    app.router.add_post(MCP_PATH, mcp_endpoint)
    # The SDK's session manager lives as long as the app (its ASGI lifespan).
    ASGIResource(asgi).lifespan_mount(app)
