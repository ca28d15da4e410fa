"""README.md and docs/*.md name only settings, commands, metrics and endpoints that exist.

An operator follows these documents during an incident: a renamed setting or a removed command
flag must fail here, not at 3 a.m. Checked:

* every `GATEWAY_*` variable is a field of `gateway.settings.Settings` (or one of the test
  harness's own variables, which must still be read by `tests/support/services.py`);
  `GATEWAY_PUSH_*` style prefixes must match at least one setting;
* every `calendar-gateway ...` command parses: each word is a subcommand of the real CLI parser
  and each `--option` belongs to the subcommand it follows (the `emulator` subcommand's options
  to the emulator's own parser);
* every `gateway_...` metric name is registered by the code;
* every `GET /path` (POST, DELETE, ...) is a route in `gateway/openapi.json`, which
  tests/gateway/test_openapi.py holds equal to the app's routes (Google's paths, served by the
  emulator, excepted).
"""

from __future__ import annotations

import argparse
import ast
import json
import re
from pathlib import Path

import pytest

from emulator.__main__ import build_parser as emulator_parser
from gateway.bench.setup import POSTGRES_URL_ENV, PROFILE_ENV
from gateway.cli import _parser as cli_parser
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Read by the test harness (tests/support/services.py), not by the gateway.
TEST_HARNESS_VARIABLES = {"GATEWAY_TEST_POSTGRES_URL", "GATEWAY_TEST_SOFTHSM_LIB"}
# Read by `calendar-gateway bench` only.
BENCH_VARIABLES = {POSTGRES_URL_ENV, PROFILE_ENV}

SETTING = re.compile(r"\bGATEWAY_[A-Z0-9_]+\*?")
# After `calendar-gateway `: the command up to the end of its code span, a comment, a table
# cell, or two spaces (the README's command table puts the description there).
COMMAND = re.compile(r"\bcalendar-gateway((?: [^\s`#|)\"';&<>]+)+)")
METRIC = re.compile(r"\bgateway_[a-z_]+[a-z]\b")
ENDPOINT = re.compile(r"\b(GET|POST|PUT|PATCH|DELETE) (/[A-Za-z0-9_./{}-]*)")
# Google's (the emulator's) paths, which the README describes too; the emulator's own tests
# keep those true.
GOOGLE_PATHS = ("/_emulator/", "/calendar/v3/", "/batch/", "/o/oauth2/", "/oauth2/", "/token")
GOOGLE_EXACT = {"/revoke", "/v1/userinfo"}


def _text(path: Path) -> str:
    # Shell line continuations join a command that is split over lines.
    return re.sub(r"\s*\\\n\s*", " ", path.read_text("utf-8"))


def _found(pattern: re.Pattern[str]) -> list[tuple[str, str]]:
    """(document name, match) for every match in every document."""
    return [(path.name, match.group(0)) for path in DOCS for match in pattern.finditer(_text(path))]


def test_the_documents_exist_and_are_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    for name in ("operations.md", "architecture.md"):
        assert (ROOT / "docs" / name).is_file()
        assert f"(docs/{name})" in readme


def test_every_setting_named_exists() -> None:
    settings = {
        str(alias)
        for field in Settings.model_fields.values()
        for alias in getattr(field.validation_alias, "choices", ())
    }
    services = (ROOT / "tests" / "support" / "services.py").read_text("utf-8")
    assert all(name in services for name in TEST_HARNESS_VARIABLES)
    known = settings | TEST_HARNESS_VARIABLES | BENCH_VARIABLES
    unknown = []
    for doc, name in _found(SETTING):
        if name.endswith("*"):
            if not any(s.startswith(name[:-1]) for s in known):
                unknown.append((doc, name))
        elif name not in known:
            unknown.append((doc, name))
    assert unknown == []


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _subcommand_required(parser: argparse.ArgumentParser) -> bool:
    return any(
        isinstance(action, argparse._SubParsersAction) and action.required
        for action in parser._actions
    )


def _check_command(words: list[str]) -> str | None:
    """None if `calendar-gateway <words>` parses as documented, else what is wrong."""
    parser = cli_parser()
    path: list[str] = []
    takes_value = False
    for word in words:
        if takes_value:  # the value of the option before (`--events 1000`)
            takes_value = False
            continue
        option = word.strip("[]").split("=")[0]
        subcommands = _subcommands(parser)
        if option.startswith("-"):
            action = parser._option_string_actions.get(option)
            if action is None:
                return f"{' '.join(path) or 'calendar-gateway'} has no option {option}"
            takes_value = action.nargs != 0 and "=" not in word
        elif subcommands:
            if word not in subcommands:
                return f"{' '.join(path) or 'calendar-gateway'} has no subcommand {word!r}"
            path.append(word)
            parser = subcommands[word]
            if path == ["emulator"]:
                parser = emulator_parser()  # it parses its own options
        # Anything else is a value (a version number, a tenant, a placeholder).
    if _subcommand_required(parser):
        return f"{' '.join(path)} needs a subcommand"
    return None


def test_every_command_named_parses() -> None:
    found = _found(COMMAND)
    # The README's command table, the rotation and the operations guide at least.
    assert len(found) >= 20
    problems = [
        (doc, command, problem)
        for doc, command in found
        if (problem := _check_command(command.split()[1:])) is not None
    ]
    assert problems == []


def test_the_command_check_catches_drift() -> None:
    assert _check_command(["keys", "rotate"]) is None
    assert _check_command(["keys", "rewrap", "--batch-size", "10"]) is None
    assert _check_command(["emulator", "--port", "8085", "--seed-events", "5"]) is None
    assert _check_command(["keys", "destroy"]) is not None
    assert _check_command(["keys", "rewrap", "--batch"]) is not None
    assert _check_command(["keys"]) is not None
    assert _check_command(["emulator", "--no-such-flag"]) is not None


def _metric_names() -> set[str]:
    """Every `gateway_...` string literal in the code's metric definitions."""
    names: set[str] = set()
    for path in (ROOT / "gateway").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and re.fullmatch(r"gateway_[a-z_]+", node.value)
            ):
                names.add(node.value)
    return names


def test_every_metric_named_exists() -> None:
    names = _metric_names()
    found = _found(METRIC)
    assert found, "the documents name metrics"
    # Counters are exposed with a `_total` suffix their definition does not spell.
    unknown = [
        (doc, name)
        for doc, name in found
        if name not in names and name.removesuffix("_total") not in names
    ]
    assert unknown == []


def _template(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path.rstrip("/.") or "/")


def test_every_endpoint_named_exists() -> None:
    document = json.loads((ROOT / "gateway" / "openapi.json").read_text("utf-8"))
    routes = {
        (method.upper(), _template(path))
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }
    found = [
        (doc, method, path)
        for path_ in DOCS
        for doc in [path_.name]
        for method, path in ENDPOINT.findall(_text(path_))
        if not path.startswith(GOOGLE_PATHS) and path not in GOOGLE_EXACT
    ]
    assert len(found) >= 10
    unknown = [
        (doc, method, path)
        for doc, method, path in found
        if (method, _template(path)) not in routes
    ]
    assert unknown == []


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("set `GATEWAY_SYNC_TICK_S=2`", ["GATEWAY_SYNC_TICK_S"]),
        ("all `GATEWAY_PUSH_*` settings", ["GATEWAY_PUSH_*"]),
        ("`GATEWAY_PUBLIC_URL/webhooks/google/calendar`", ["GATEWAY_PUBLIC_URL"]),
    ],
)
def test_setting_names_are_extracted_whole(text: str, names: list[str]) -> None:
    assert SETTING.findall(text) == names
