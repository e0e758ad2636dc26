"""Schemathesis against both running APIs, from their own OpenAPI documents.

Every generated request (valid and invalid: schemathesis also breaks the schema on purpose)
must get no 5xx, a documented status code and content type, and a body and headers that
conform to the documented schema. Authenticated routes get a valid token. The live (SSE) route
never ends, so it is left to tests/security and tests/e2e.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.core.failures import AcceptedNegativeData, Failure
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from kernel.auth import mint_token
from kernel.settings import Settings
from tests.e2e.conftest import running_system
from tests.pipeline import isolated

COMMAND_PORT, QUERY_PORT = 28200, 28201
# Enough to find what the first runs found (each a few hundred requests), quick enough for CI.
EXAMPLES = 60
FUZZ = hypothesis_settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=False,
    database=None,
)


@pytest.fixture(scope="module")
def apis(settings: Settings) -> Iterator[Settings]:
    """The whole system as processes (so the read models are live, as in production), with
    a vote limit high enough not to hide anything behind a 429."""
    config = isolated(settings, vote_rate_limit=1_000_000, read_wait_ms=2000)
    with running_system(config, COMMAND_PORT, QUERY_PORT):
        yield config


@pytest.fixture(scope="module")
def bearer(apis: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token('fuzzer', apis.jwt_secret, 3600)}"}


@pytest.fixture
def command_schema(apis: Settings) -> Any:
    return schemathesis.openapi.from_url(f"http://127.0.0.1:{COMMAND_PORT}/schema/openapi.json")


@pytest.fixture
def query_schema(apis: Settings) -> Any:
    return schemathesis.openapi.from_url(f"http://127.0.0.1:{QUERY_PORT}/schema/openapi.json")


command_api = schemathesis.pytest.from_fixture("command_schema")
query_api = schemathesis.pytest.from_fixture("query_schema").exclude(operation_id="stream_scores")


def schema_violations_rejected(ctx: Any, response: Any, case: Any) -> bool | None:
    """Schemathesis's own check, but HTTP headers are open: a request with a header this API
    does not know (as every proxy adds) is fine."""
    try:
        return negative_data_rejection(ctx, response, case)
    except AcceptedNegativeData as failure:
        if "in header - object with unexpected properties" in failure.message.lower():
            return None
        raise


def valid_data_accepted(ctx: Any, response: Any, case: Any) -> bool | None:
    """Schemathesis's own check, but a ``min_position`` above the log's head is refused (400)
    though the schema allows it: whether a position was ever answered is known only at run
    time, and a made-up one must not hold the server for its read wait."""
    try:
        return positive_data_acceptance(ctx, response, case)
    except Failure:
        body = response.json() if "json" in response.headers.get("content-type", [""])[0] else {}
        if response.status_code == 400 and body.get("type", "").endswith(":position-beyond-head"):
            return None
        raise


def call(case: Any, bearer: dict[str, str]) -> None:
    """Send ``case`` with a valid token and check everything schemathesis checks."""
    if case.query:
        # A cursor is signed: a made-up one is rightly a 400 (tests/security forges them).
        case.query.pop("cursor", None)
    if case.headers and "Idempotency-Key" in case.headers:
        # One key per request: the same key with another body is rightly a 422 (tested in
        # tests/integration), and generated cases reuse "0".
        case.headers["Idempotency-Key"] = uuid.uuid4().hex
    case.call_and_validate(
        headers=bearer,
        excluded_checks=[negative_data_rejection, positive_data_acceptance],
        additional_checks=[schema_violations_rejected, valid_data_accepted],
    )


@command_api.parametrize()
@FUZZ
def test_the_command_api_answers_as_documented(case: Any, bearer: dict[str, str]) -> None:
    call(case, bearer)


@query_api.parametrize()
@FUZZ
def test_the_query_api_answers_as_documented(case: Any, bearer: dict[str, str]) -> None:
    call(case, bearer)
