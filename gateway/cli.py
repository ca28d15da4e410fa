"""The `calendar-gateway` command line.

Every failure the user can fix ends as ONE line on stderr, `calendar-gateway: error: ...`, and a
non-zero exit status (2 for configuration, 1 for everything else); no traceback, no secret.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from gateway.errors import ConfigurationError, GatewayError
from gateway.settings import Settings, load_settings
from vault.errors import VaultError

PROG = "calendar-gateway"

Command = Callable[[argparse.Namespace, Settings], Awaitable[int]]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Calendar Gateway")
    parser.add_argument(
        "--env-file", default=".env", help="settings file read before the environment (.env)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the gateway HTTP service")
    serve.add_argument("--migrate", action="store_true", help="apply migrations before serving")
    serve.add_argument("--host", help="override GATEWAY_HOST")
    serve.add_argument("--port", type=int, help="override GATEWAY_PORT")

    sub.add_parser("migrate", help="apply database migrations")

    keys = sub.add_parser("keys", help="key-encryption-key operations")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    keys_sub.add_parser("status", help="KEK versions and how many data keys each wraps")
    keys_sub.add_parser("rotate", help="create a new primary KEK version")
    rewrap = keys_sub.add_parser("rewrap", help="rewrap every data key under the primary KEK")
    rewrap.add_argument("--batch-size", type=int, default=1000, help="keys per transaction")
    retire = keys_sub.add_parser("retire", help="retire a KEK version nothing depends on")
    retire.add_argument("version", type=int, help="KEK version number")

    bench = sub.add_parser("bench", help="benchmarks that print figures")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    bench_vault = bench_sub.add_parser("vault", help="vault encrypt/decrypt/rewrap throughput")
    bench_vault.add_argument("--deks", type=int, default=20_000, help="data keys to rewrap")

    emu = sub.add_parser("emulator", help="run the local Google emulator alone")
    emu.add_argument("--host", default="127.0.0.1")
    emu.add_argument("--port", type=int, default=8085)
    return parser


def _fail(message: str, status: int = 1) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(env_file=args.env_file)
    except ConfigurationError as exc:
        return _fail(str(exc), 2)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.log_level != "DEBUG":
        # Alembic narrates every plugin and revision at INFO; our own lines say what happened.
        logging.getLogger("alembic").setLevel(logging.WARNING)
    command = _dispatch(args)
    try:
        return asyncio.run(command(args, settings))
    except ConfigurationError as exc:
        return _fail(str(exc), 2)
    except (GatewayError, VaultError) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> Command:
    # Imported on use: `calendar-gateway migrate` should not load the HTTP server, and so on.
    from gateway import commands

    table: dict[str, Any] = {
        "serve": commands.serve,
        "migrate": commands.migrate,
        "emulator": commands.emulator,
        "keys": {
            "status": commands.keys_status,
            "rotate": commands.keys_rotate,
            "rewrap": commands.keys_rewrap,
            "retire": commands.keys_retire,
        },
        "bench": {"vault": commands.bench_vault},
    }
    entry = table[args.command]
    if isinstance(entry, dict):
        entry = entry[getattr(args, f"{args.command}_command")]
    return entry  # type: ignore[no-any-return]
