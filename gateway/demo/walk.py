"""The demo's HTTP side: every step talks to the running services as their real callers do.

    Api        the agent's backend: JSON calls to the gateway with its API key
    browse()   the user's browser: GET, and follow each redirect by hand until the return URL
    Google     the emulator's control API (`/_emulator/...`): what "Google's side" does

Nothing here prints; the runner decides what to show. URLs are shown through `display_url`,
which keeps the parameter names but not the values of OAuth codes, states and the like.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import aiohttp

from gateway.demo.errors import DemoFailed

# Query parameters whose values are harmless and help the reader follow the redirect chain.
_SHOWN_PARAMS = frozenset({"status", "integration_id", "error", "login_hint"})


def display_url(url: str, max_params: int = 2) -> str:
    """`url` for printing: scheme, host, path and parameter names, with the values of all but
    a few harmless parameters replaced by `…` (the code and state are one-time secrets), and
    at most `max_params` other parameters named."""
    parts = urlsplit(url)
    shown: list[str] = []
    hidden = 0
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in _SHOWN_PARAMS:
            shown.append(f"{name}={value}")
        elif len(shown) < max_params:
            shown.append(f"{name}=…")
        else:
            hidden += 1
    query = "&".join(shown) + (f"&… ({hidden} more)" if hidden else "")
    return f"{parts.scheme}://{parts.netloc}{parts.path}" + (f"?{query}" if query else "")


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: status, headers and the decoded JSON body (None when not JSON)."""

    status: int
    headers: dict[str, str]
    body: Any

    def problem(self) -> str:
        """`code: detail` of a problem+json body, else the status alone."""
        if isinstance(self.body, dict) and "code" in self.body:
            return f"{self.body['code']}: {self.body.get('detail', '')}".rstrip(": ")
        return f"HTTP {self.status}"


async def _reply(response: aiohttp.ClientResponse) -> Reply:
    text = await response.text()
    try:
        body: Any = json.loads(text) if text else None
    except ValueError:
        body = None
    return Reply(response.status, dict(response.headers), body)


@dataclass
class Api:
    """The gateway's API as the agent's backend calls it."""

    http: aiohttp.ClientSession
    base_url: str
    api_key: str = field(repr=False)

    async def call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        expect: tuple[int, ...] = (200,),
    ) -> Reply:
        """One call; DemoFailed (naming the call and the problem code) unless the status is
        one of `expect`."""
        async with self.http.request(
            method,
            self.base_url + path,
            json=json_body,
            params=params,
            headers={"Authorization": f"Bearer {self.api_key}", **(headers or {})},
        ) as response:
            reply = await _reply(response)
        if reply.status not in expect:
            raise DemoFailed(f"{method} {path} answered {reply.status} ({reply.problem()})")
        return reply


@dataclass(frozen=True)
class Hop:
    """One step of the browser's journey."""

    url: str
    status: int
    location: str | None


async def browse(
    http: aiohttp.ClientSession, url: str, *, until: str, max_hops: int = 10
) -> tuple[list[Hop], str]:
    """GET `url` and follow redirects one by one, as a browser would, until a Location starts
    with `until` (the agent's web app, not fetched). Returns the hops and that final URL."""
    hops: list[Hop] = []
    for _ in range(max_hops):
        async with http.get(url, allow_redirects=False) as response:
            await response.read()
            location = response.headers.get("Location")
            hops.append(Hop(url, response.status, location))
        if response.status not in (301, 302, 303, 307) or location is None:
            raise DemoFailed(
                f"the browser expected a redirect from {display_url(url)}, got {response.status}"
            )
        url = urljoin(url, location)
        if url.startswith(until):
            return hops, url
    raise DemoFailed(f"the browser gave up after {max_hops} redirects")


def query_params(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


@dataclass
class Google:
    """The emulator's control API: scripting users, calendars and push, and inspection."""

    http: aiohttp.ClientSession
    base_url: str

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """`method /_emulator{path}` with a JSON body; the JSON answer, or DemoFailed."""
        async with self.http.request(
            method, f"{self.base_url}/_emulator{path}", json=body
        ) as response:
            reply = await _reply(response)
        if reply.status >= 300:
            detail = reply.body.get("error") if isinstance(reply.body, dict) else None
            raise DemoFailed(
                f"the emulator refused {method} /_emulator{path}: {reply.status} {detail or ''}"
            )
        return reply.body

    async def issued_tokens(self, email: str) -> set[str]:
        """Every access and refresh token the emulator issued to `email`'s grants."""
        grants = await self.call("GET", f"/grants?user={email}")
        found: set[str] = set()
        for grant in grants:
            found.add(grant["refresh_token"])
            found.update(grant["retired_refresh_tokens"])
            found.update(grant["access_tokens"])
        return {t for t in found if t}

    async def deliveries(self) -> list[dict[str, Any]]:
        """Push notifications sent so far (channel, state, message number, answer)."""
        found = await self.call("GET", "/calendar/channels")
        return list(found["deliveries"])
