"""Running the emulator alone: `calendar-gateway emulator --port 8085` or `python -m emulator`.

`run_emulator()` registers a demo OAuth client and demo users (unless told otherwise), prints
what a person needs to point a client at it, and serves until cancelled. Everything else is
scripted at run time through the control API under `/_emulator/` (see `emulator/control.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from aiohttp import web

from emulator.app import create_emulator_app
from emulator.state import ConsentMode, EmulatorState

DEMO_CLIENT_ID = "calendar-gateway-demo.apps.googleusercontent.com"
# A published, local-only credential: the emulator guards nothing of value.
DEMO_CLIENT_SECRET = "emu-demo-secret"  # noqa: S105
DEMO_REDIRECT_URIS = (
    "http://127.0.0.1:8080/oauth/google/callback",
    "http://localhost:8080/oauth/google/callback",
)


@dataclass(frozen=True)
class SeedUser:
    """A scripted user to create at start."""

    sub: str
    email: str
    consent: ConsentMode = "grant"
    partial_scopes: tuple[str, ...] = ()
    time_zone: str = "UTC"
    name: str = ""


DEMO_USERS = (
    SeedUser(
        "110000000000000000001", "demo.rep@example.com", time_zone="Europe/Berlin", name="Demo Rep"
    ),
    SeedUser("110000000000000000002", "denier@example.com", consent="deny"),
    SeedUser(
        "110000000000000000003",
        "readonly@example.com",
        consent="partial",
        partial_scopes=("https://www.googleapis.com/auth/calendar.readonly",),
    ),
)


def prepare_state(
    state: EmulatorState | None = None,
    *,
    seed_users: Iterable[SeedUser] = DEMO_USERS,
    client_id: str = DEMO_CLIENT_ID,
    client_secret: str = DEMO_CLIENT_SECRET,
    redirect_uris: Sequence[str] = DEMO_REDIRECT_URIS,
    access_token_lifetime_s: int | None = None,
) -> EmulatorState:
    """A state with the demo client and users; the first user is the default sign-in."""
    state = state or EmulatorState()
    state.add_client(client_id, client_secret, redirect_uris)
    for user in seed_users:
        state.add_user(
            user.sub,
            user.email,
            consent=user.consent,
            partial_scopes=user.partial_scopes,
            time_zone=user.time_zone,
            name=user.name,
        )
        state.default_user_sub = state.default_user_sub or user.sub
    if access_token_lifetime_s is not None:
        state.access_token_lifetime_s = access_token_lifetime_s
    return state


def banner(base_url: str, state: EmulatorState) -> str:
    """What a person needs to use a freshly started emulator."""
    lines = [f"Google emulator on {base_url}", ""]
    for client in state.clients.values():
        lines += [
            f"  OAuth client id:     {client.client_id}",
            f"  OAuth client secret: {client.client_secret}",
            f"  redirect URIs:       {' '.join(client.redirect_uris)}",
        ]
    lines += [
        f"  authorization:       {base_url}/o/oauth2/v2/auth",
        f"  token:               {base_url}/token",
        f"  revoke:              {base_url}/revoke",
        f"  Calendar v3:         {base_url}/calendar/v3/",
        f"  control API:         {base_url}/_emulator/",
        "  users (login_hint):  "
        + ", ".join(f"{u.email} [{u.consent}]" for u in state.users.values()),
    ]
    return "\n".join(lines)


async def run_emulator(
    host: str = "127.0.0.1",
    port: int = 8085,
    *,
    state: EmulatorState | None = None,
    seed_users: Iterable[SeedUser] = DEMO_USERS,
    client_id: str = DEMO_CLIENT_ID,
    client_secret: str = DEMO_CLIENT_SECRET,
    redirect_uris: Sequence[str] = DEMO_REDIRECT_URIS,
    access_token_lifetime_s: int | None = None,
    seed: Callable[[EmulatorState], None] | None = None,
    started: Callable[[str], None] | None = None,
    announce: Callable[[str], None] = print,
) -> None:
    """Serve the emulator on host:port until cancelled.

    `seed` may fill calendars before serving; `started` receives the base URL once the socket
    listens (useful with port=0); `announce` prints the banner.
    """
    state = prepare_state(
        state,
        seed_users=seed_users,
        client_id=client_id,
        client_secret=client_secret,
        redirect_uris=redirect_uris,
        access_token_lifetime_s=access_token_lifetime_s,
    )
    if seed is not None:
        seed(state)
    runner = web.AppRunner(create_emulator_app(state), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0]
        base_url = f"http://{host}:{bound[1]}"
        announce(banner(base_url, state))
        if started is not None:
            started(base_url)
        await asyncio.Event().wait()  # until cancelled
    finally:
        await runner.cleanup()
