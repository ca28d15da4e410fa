"""`python -m emulator --port 8085`: run the Google emulator alone (see `emulator/server.py`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
from collections.abc import Callable, Sequence

from emulator.seed import seed_calendar
from emulator.server import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    DEMO_REDIRECT_URIS,
    DEMO_USERS,
    SeedUser,
    run_emulator,
)
from emulator.state import CONSENT_MODES, ConsentMode, EmulatorState


def parse_user(spec: str) -> SeedUser:
    """`email[:grant|deny|partial]`; the sub is derived from the email so it is stable."""
    email, _, consent = spec.partition(":")
    if consent and consent not in CONSENT_MODES:
        raise argparse.ArgumentTypeError(f"consent must be one of {', '.join(CONSENT_MODES)}")
    mode: ConsentMode = consent or "grant"
    sub = str(int(hashlib.sha256(email.encode()).hexdigest()[:15], 16)).zfill(21)
    return SeedUser(sub, email, consent=mode)


def build_parser(prog: str = "python -m emulator") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8085)
    parser.add_argument("--client-id", default=DEMO_CLIENT_ID)
    parser.add_argument("--client-secret", default=DEMO_CLIENT_SECRET)
    parser.add_argument(
        "--redirect-uri",
        action="append",
        help=f"registered redirect URI (repeatable; default {' '.join(DEMO_REDIRECT_URIS)})",
    )
    parser.add_argument(
        "--user",
        action="append",
        type=parse_user,
        help="scripted user as email[:grant|deny|partial] (repeatable; default: demo users)",
    )
    parser.add_argument("--token-lifetime", type=int, help="access token lifetime in seconds")
    parser.add_argument(
        "--seed-events",
        type=int,
        default=0,
        metavar="N",
        help="fill each user's primary calendar with N generated events (deterministic)",
    )
    parser.add_argument(
        "--allow-insecure-loopback-webhooks",
        action="store_true",
        help="let watch channels push to http:// on a loopback host (Google wants https; a "
        "gateway on your machine has no certificate). Also settable at run time: "
        "POST /_emulator/calendar/settings",
    )
    return parser


def seed_primary_calendars(count: int) -> Callable[[EmulatorState], None]:
    """A `run_emulator(seed=...)` function giving every scripted user `count` events."""

    def seed(state: EmulatorState) -> None:
        for number, user in enumerate(state.users.values(), start=1):
            calendar = state.calendars.ensure_user(user.email)
            seed_calendar(state.calendars, calendar, seed=number, count=count)

    return seed


def main(argv: Sequence[str] | None = None, prog: str = "python -m emulator") -> None:
    args = build_parser(prog).parse_args(argv)
    state = EmulatorState()
    state.calendars.allow_insecure_loopback_webhooks = args.allow_insecure_loopback_webhooks
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            run_emulator(
                args.host,
                args.port,
                state=state,
                seed_users=args.user or DEMO_USERS,
                client_id=args.client_id,
                client_secret=args.client_secret,
                redirect_uris=args.redirect_uri or DEMO_REDIRECT_URIS,
                access_token_lifetime_s=args.token_lifetime,
                seed=seed_primary_calendars(args.seed_events) if args.seed_events > 0 else None,
            )
        )


if __name__ == "__main__":
    main()
