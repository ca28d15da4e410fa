"""The `calendar-gateway` command line.

Every failure the user can fix ends as ONE line on stderr, `calendar-gateway: error: ...`, and a
non-zero exit status (2 for configuration, 1 for everything else); no traceback, no secret.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from gateway.errors import ConfigurationError, GatewayError, InvalidInput
from gateway.observability.logs import configure_logging
from gateway.settings import Settings, load_settings, unknown_variables
from vault.errors import VaultError

PROG = "calendar-gateway"

Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Calendar Gateway")
    parser.add_argument(
        "--env-file",
        default=None,
        help="settings file read before the environment (default: .env if it exists)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="walk through the whole gateway against a local Google emulator (no setup)",
        description=(
            "Start the Google emulator and the gateway on embedded defaults in a scratch "
            "folder and walk through connect, sync, availability, booking, push, key rotation "
            "and disconnect over real HTTP. Reads no .env and no GATEWAY_* variables."
        ),
    )
    demo.add_argument(
        "--workdir",
        type=Path,
        help="use and keep this new or empty folder (default: a temporary one, removed after)",
    )
    demo.add_argument(
        "--plain", action="store_true", help="no colour, no animation (automatic without a TTY)"
    )

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

    receipts = sub.add_parser("receipts", help="signed destruction receipts")
    receipts_sub = receipts.add_subparsers(dest="receipts_command", required=True, metavar="ACTION")
    verify = receipts_sub.add_parser(
        "verify", help="exit 0 if FILE is a genuine receipt, 1 (saying why) if not"
    )
    verify.add_argument("file", help="a receipt as the disconnect answered it (JSON)")
    receipts_sub.add_parser("keys", help="list the receipt-signing keys (public parts)")
    receipts_sub.add_parser(
        "rotate-key", help="sign new receipts with a new key (old ones stay listed)"
    )

    api_keys = sub.add_parser("api-keys", help="API keys of internal callers")
    api_keys_sub = api_keys.add_subparsers(dest="api_keys_command", required=True, metavar="ACTION")
    create = api_keys_sub.add_parser("create", help="create a key (its value is printed once)")
    create.add_argument("--tenant", required=True, help="tenant the key belongs to")
    create.add_argument(
        "--scopes",
        required=True,
        help=(
            "comma-separated: connections:read, connections:write, calendar:read, "
            "calendar:write, webhooks:read, webhooks:write"
        ),
    )
    create.add_argument("--name", help="a label to recognise the key by")
    listing = api_keys_sub.add_parser("list", help="list keys (never their values)")
    listing.add_argument("--tenant", help="only this tenant's keys")
    revoke = api_keys_sub.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("key_id", help="the key id shown by `api-keys list`")

    bench = sub.add_parser(
        "bench", help="benchmarks that print figures (no WHAT: all of them, one table)"
    )
    _bench_all_options(bench)
    bench_sub = bench.add_subparsers(dest="bench_command", required=False, metavar="WHAT")
    bench_vault = bench_sub.add_parser("vault", help="vault encrypt/decrypt/rewrap throughput")
    bench_vault.add_argument("--deks", type=int, default=20_000, help="data keys to rewrap")
    bench_sync = bench_sub.add_parser(
        "sync", help="full-sync ingest rate and push-to-visible lag, against the emulator"
    )
    bench_sync.add_argument("--integrations", type=_positive, default=1_000)
    bench_sync.add_argument("--events", type=_positive, default=1_000, help="per calendar")
    _bench_db_option(bench_sync)
    bench_sync.add_argument(
        "--processes", type=_positive, default=2, help="gateway processes on PostgreSQL"
    )
    bench_sync.add_argument(
        "--push-parallel", type=_positive, default=8, help="pushed changes in flight at once"
    )
    bench_sync.add_argument(
        "--sync-concurrency", type=_positive, default=8, help="GATEWAY_SYNC_CONCURRENCY"
    )
    bench_api = bench_sub.add_parser(
        "api", help="cached free/busy requests/s and latency against a bare aiohttp handler"
    )
    bench_api.add_argument("--events", type=_positive, default=1_000, help="in the calendar")
    _bench_db_option(bench_api)
    bench_api.add_argument("--concurrency", type=_positive, default=64, help="connections")
    bench_api.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    bench_api.add_argument(
        "--large-events",
        type=int,
        default=10_000,
        help="events of the large calendar compared with a 100-event one (0: skip)",
    )
    bench_api.add_argument(
        "--memory-calendars",
        type=int,
        default=20,
        help="calendars loaded for the memory figure (0: skip)",
    )
    bench_api.add_argument(
        "--batch",
        type=int,
        default=50,
        help="integrations in one POST /v1/freebusy and /v1/slots, against as many single"
        " calls (0: skip)",
    )
    bench_hooks = bench_sub.add_parser(
        "webhooks", help="outbound webhook deliveries/s and lag to a local receiver"
    )
    bench_hooks.add_argument("--rate", type=_positive, default=100, help="paced events/s")
    bench_hooks.add_argument("--duration", type=float, default=5.0, help="paced seconds")
    bench_hooks.add_argument("--burst", type=_positive, default=1_000, help="burst events")
    bench_hooks.add_argument(
        "--integrations",
        type=int,
        default=100,
        help="sync phase: integrations, one change at Google each (0: skip)",
    )
    _bench_db_option(bench_hooks)
    _bench_all_options(
        bench_sub.add_parser("all", help="vault, sync and API benchmarks in one table")
    )

    mcp = sub.add_parser(
        "mcp",
        help="serve the gateway's MCP tools on stdin/stdout for a local agent",
        description=(
            "Bridge a local agent's MCP stdio to a gateway's /mcp endpoint. Reads the "
            "gateway's base URL from CALENDAR_GATEWAY_URL and the API key from "
            "CALENDAR_GATEWAY_API_KEY (never from the command line)."
        ),
    )
    mcp.add_argument(
        "--stdio", action="store_true", required=True, help="speak MCP on stdin/stdout"
    )

    connect = sub.add_parser(
        "connect",
        help="start a connect session for a user (with --follow: finish it against the emulator)",
        description=(
            "Create a connect session on a gateway and print its connect_url, or with --follow "
            "play the browser (the Google emulator needs no person) and print the new "
            "integration's id. Reads the gateway's base URL from CALENDAR_GATEWAY_URL and the "
            "API key (connections:write) from CALENDAR_GATEWAY_API_KEY."
        ),
    )
    connect.add_argument("--user-id", required=True, help="your app's id for the user")
    connect.add_argument(
        "--return-url", required=True, help="where the browser ends (GATEWAY_ALLOWED_RETURN_URLS)"
    )
    connect.add_argument("--login-hint", help="the user's Google address, if known")
    connect.add_argument(
        "--follow",
        action="store_true",
        help="follow the redirects as a browser would and print the integration id (emulator)",
    )

    sub.add_parser(
        "emulator",
        help="run the local Google emulator alone (options: see `python -m emulator --help`)",
        add_help=False,
    )
    return parser


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _bench_db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        choices=("sqlite", "postgres", "both"),
        default="both",
        help="backend(s); PostgreSQL at GATEWAY_BENCH_POSTGRES_URL (a throwaway database)",
    )


def _bench_all_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--full",
        action="store_true",
        help="the issues' sizes (sync 1,000 x 1,000 events; takes long on two cores)",
    )
    parser.add_argument("--integrations", type=_positive, help="sync: integrations")
    parser.add_argument("--events", type=_positive, help="sync: events per calendar")
    parser.add_argument("--deks", type=_positive, help="vault: data keys to rewrap")
    parser.add_argument("--duration", type=float, help="api: measured seconds per load run")
    _bench_db_option(parser)


def _fail(message: str, status: int = 1) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "emulator":
        # The emulator is not the gateway: it reads no gateway settings and parses its own
        # options (argparse's REMAINDER would not take ones starting with "--").
        from emulator.__main__ import main as emulator_main

        emulator_main(extra, prog=f"{PROG} emulator")
        return 0
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "mcp":
        # A client of some gateway, not a gateway: it reads no gateway settings.
        return _mcp_stdio()
    if args.command == "connect":
        return _connect(args)
    if args.command == "demo":
        # Embedded defaults only: a developer's .env (perhaps the real Google) must not apply.
        return _demo(args)
    env_file = Path(args.env_file) if args.env_file is not None else Path(".env")
    if args.env_file is not None and not env_file.exists():
        return _fail(f"--env-file {args.env_file}: no such file", 2)
    for warning in unknown_variables(_variable_names(env_file)):
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    try:
        settings = load_settings(env_file=env_file)
    except ConfigurationError as exc:
        return _fail(str(exc), 2)
    configure_logging(settings.log_level, settings.log_format)
    command = _dispatch(args)
    try:
        return asyncio.run(command(args, settings))
    except (ConfigurationError, InvalidInput) as exc:
        return _fail(str(exc), 2)
    except (GatewayError, VaultError) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # A bug, not a user error: the traceback goes to the log at DEBUG only, because
        # exception messages from drivers can quote values we must not print.
        logging.getLogger(__name__).debug("unexpected failure", exc_info=True)
        return _fail(
            f"unexpected {type(exc).__name__}; run with GATEWAY_LOG_LEVEL=DEBUG for details"
        )


def _variable_names(env_file: Path) -> set[str]:
    """The variable names the settings will see: the environment's and the settings file's."""
    names = set(os.environ)
    if env_file.exists():
        # python-dotenv is what pydantic-settings reads the file with.
        from dotenv import dotenv_values

        names.update(dotenv_values(env_file))
    return names


def _mcp_stdio() -> int:
    from gateway.mcp.stdio import config_from_env, run_bridge

    # stdout carries the protocol: every log line goes to stderr.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        config = config_from_env()
    except ConfigurationError as exc:
        return _fail(str(exc), 2)
    try:
        asyncio.run(run_bridge(config))
    except KeyboardInterrupt:
        return 130
    return 0


def _connect(args: argparse.Namespace) -> int:
    from gateway.connect_command import ConnectRequest, run_connect

    request = ConnectRequest(args.user_id, args.return_url, args.login_hint)
    try:
        return asyncio.run(
            run_connect(request, follow_redirects=args.follow, environ=dict(os.environ))
        )
    except GatewayError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130


def _demo(args: argparse.Namespace) -> int:
    from gateway.demo.command import run_demo

    try:
        return asyncio.run(run_demo(workdir=args.workdir, plain=args.plain))
    except GatewayError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> Command:
    # Imported on use: `calendar-gateway migrate` should not load the HTTP server, and so on.
    from gateway import commands

    table: dict[str, Any] = {
        "serve": commands.serve,
        "migrate": commands.migrate,
        "keys": {
            "status": commands.keys_status,
            "rotate": commands.keys_rotate,
            "rewrap": commands.keys_rewrap,
            "retire": commands.keys_retire,
        },
        "bench": {
            "vault": commands.bench_vault,
            "sync": commands.bench_sync,
            "api": commands.bench_api,
            "webhooks": commands.bench_webhooks,
            "all": commands.bench_all,
            None: commands.bench_all,
        },
        "receipts": {
            "verify": commands.receipts_verify,
            "keys": commands.receipts_keys,
            "rotate-key": commands.receipts_rotate_key,
        },
        "api-keys": {
            "create": commands.api_keys_create,
            "list": commands.api_keys_list,
            "revoke": commands.api_keys_revoke,
        },
    }
    entry = table[args.command]
    if isinstance(entry, dict):
        entry = entry[getattr(args, f"{args.command.replace('-', '_')}_command")]
    return entry  # type: ignore[no-any-return]
