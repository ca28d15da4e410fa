"""Property-based fuzzing of the whole HTTP API from its OpenAPI document (schemathesis).

For every documented operation, generated requests (valid and invalid) must never get a 5xx,
every answer must match the documented status codes, content types and schemas, and every
error must be RFC 9457 problem+json. Runs against the real gateway and emulator over HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.checks import (
    CheckContext,
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.reliability.live import LiveStack, live_stack
from tests.support.stack import EmulatorSecrets

# One live stack serves the whole module (module-scoped fixture): its tests stay on one xdist
# worker (--dist loadgroup) instead of each worker starting a stack of its own.
pytestmark = pytest.mark.xdist_group("api_fuzz")

OPENAPI = Path(__file__).parents[2] / "gateway" / "openapi.json"
schema = schemathesis.openapi.from_dict(json.loads(OPENAPI.read_text("utf-8")))

# Enough to hit every branch of the validators on each operation, small enough for CI.
EXAMPLES = 25


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, emulator_secrets: EmulatorSecrets
) -> Iterator[LiveStack]:
    with live_stack(tmp_path_factory.mktemp("fuzz"), emulator_secrets) as running:
        yield running


# Answers for browsers (the OAuth callback shows the user a page) and the MCP transport (JSON-RPC
# errors) have their own documented formats.
NOT_PROBLEM_JSON = {"/oauth/google/callback", "/mcp"}


@schemathesis.check
def errors_are_problem_json(ctx: CheckContext, response: schemathesis.Response, case: Case) -> bool:
    if response.status_code >= 400 and case.path not in NOT_PROBLEM_JSON:
        content_type = response.headers.get("content-type", [""])[0]
        assert content_type.startswith("application/problem+json"), (
            f"{case.method} {case.path} -> {response.status_code} {content_type}"
        )
        body = response.json()
        assert {"type", "title", "status", "detail", "code"} <= set(body)
        assert body["status"] == response.status_code
    return True


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_5xx_and_every_answer_matches_the_document(case: Case, live: LiveStack) -> None:
    # Half the calls name the real integration, so handlers get past the 404.
    if "integration_id" in (case.path_parameters or {}) and hash(repr(case.body)) % 2 == 0:
        case.path_parameters["integration_id"] = live.integration_id
    case.call_and_validate(
        base_url=live.base_url,
        headers={"Authorization": f"Bearer {live.api_key}"},
        allow_redirects=False,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            errors_are_problem_json,
        ],
        excluded_checks=[negative_data_rejection],
    )
