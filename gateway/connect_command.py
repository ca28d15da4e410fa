"""`calendar-gateway connect`: start a connect session from a shell, as an app's backend would.

    CALENDAR_GATEWAY_URL=http://127.0.0.1:8080 CALENDAR_GATEWAY_API_KEY=cgw_... \\
        calendar-gateway connect --user-id rep-1 --return-url http://localhost:3000/connected

prints the session's `connect_url` for the user's browser. With `--follow` (for the Google
emulator, whose users consent without a person) it plays the browser itself: follows the
redirects connect_url -> Google -> the gateway's callback -> the return URL, and prints the new
integration's id alone on stdout (`INT=$(calendar-gateway connect ... --follow)`), or exits 1
with the flow's error code. Like `mcp --stdio` it is a client of some gateway: it reads the
gateway's URL and the API key from the environment (never from argv, where `ps` shows it) and no
gateway settings.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from urllib.parse import parse_qsl, urljoin, urlsplit

import aiohttp

from gateway.errors import GatewayError

# The variables `mcp --stdio` reads (gateway.mcp.stdio), named again rather than imported:
# that module loads the MCP SDK, seconds of start-up a shell command should not pay.
URL_ENV = "CALENDAR_GATEWAY_URL"
KEY_ENV = "CALENDAR_GATEWAY_API_KEY"
MAX_HOPS = 10


class ConnectFailed(GatewayError):
    """The connect session could not be started or did not end `connected`."""

    code = "connect_failed"


@dataclass(frozen=True)
class ConnectRequest:
    user_id: str
    return_url: str
    login_hint: str | None = None


def _base_url(environ: dict[str, str]) -> tuple[str, str]:
    base = environ.get(URL_ENV, "").strip().rstrip("/")
    key = environ.get(KEY_ENV, "").strip()
    if not base.startswith(("http://", "https://")):
        raise ConnectFailed(f"{URL_ENV} must be the gateway's http(s) base URL")
    if not key:
        raise ConnectFailed(f"{KEY_ENV} must hold an API key with connections:write")
    return base, key


async def start_session(
    http: aiohttp.ClientSession, base: str, key: str, request: ConnectRequest
) -> str:
    """POST /v1/connect-sessions; returns the `connect_url`."""
    body: dict[str, str] = {"user_id": request.user_id, "return_url": request.return_url}
    if request.login_hint:
        body["login_hint"] = request.login_hint
    async with http.post(
        f"{base}/v1/connect-sessions", json=body, headers={"Authorization": f"Bearer {key}"}
    ) as response:
        answer = await response.json(content_type=None)
        if response.status != 201:
            code = answer.get("code") if isinstance(answer, dict) else None
            raise ConnectFailed(
                f"POST /v1/connect-sessions answered {response.status} ({code or 'no code'})"
            )
    return str(answer["connect_url"])


async def follow(http: aiohttp.ClientSession, url: str, return_url: str) -> dict[str, str]:
    """GET `url` and follow each redirect as a browser would until one leads to
    `return_url` (not fetched: it is the app's page); returns that URL's query parameters."""
    for _ in range(MAX_HOPS):
        async with http.get(url, allow_redirects=False) as response:
            await response.read()
            location = response.headers.get("Location")
        if response.status not in (301, 302, 303, 307, 308) or location is None:
            raise ConnectFailed(
                f"{urlsplit(url).netloc} answered {response.status} instead of a redirect: "
                "a real Google needs a person; open the connect_url in a browser instead"
            )
        url = urljoin(url, location)
        if url.startswith(return_url):
            return dict(parse_qsl(urlsplit(url).query))
    raise ConnectFailed(f"gave up after {MAX_HOPS} redirects")


async def run_connect(
    request: ConnectRequest, *, follow_redirects: bool, environ: dict[str, str]
) -> int:
    """Start the session; print its connect_url, or (`follow_redirects`) the integration id."""
    base, key = _base_url(environ)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            connect_url = await start_session(http, base, key, request)
            if not follow_redirects:
                print(connect_url)
                print("open this URL in the user's browser (valid 10 minutes)", file=sys.stderr)
                return 0
            back = await follow(http, connect_url, request.return_url)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ConnectFailed(
            f"cannot reach {urlsplit(base).netloc} ({type(exc).__name__})"
        ) from None
    if back.get("status") != "connected" or "integration_id" not in back:
        raise ConnectFailed(
            f"the flow ended with status={back.get('status')} error={back.get('error')}"
        )
    print(back["integration_id"])
    return 0
