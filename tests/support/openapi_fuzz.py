"""Schemathesis over one route of the OpenAPI document the API serves: in process and through the deployed gateway
alike, with the same checks."""

from __future__ import annotations

from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance

from tests.support.gateway import ApiRoute

# No 5xx; every status declared for its route; every body as its declared schema.
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


def openapi_schema(session: requests.Session, base_url: str) -> Any:
    """The OpenAPI document the API serves (`/docs?format=json`), read through the transport the tests use."""
    response = session.get(f"{base_url}/docs", params={"format": "json"}, timeout=60)
    assert response.status_code == 200, response.text
    return schemathesis.openapi.from_dict(response.json())


def documented_routes(schema: Any) -> set[tuple[str, str]]:
    """(METHOD, path) of every operation in the document."""
    return {(result.ok().method.upper(), result.ok().path) for result in schema.get_all_operations()}


def fuzz_route(session: requests.Session, base_url: str, route: ApiRoute, examples: int) -> None:
    """`examples` valid requests to the route, and as many that break its schema when it takes a body (every path
    parameter is a free string and no route takes a query, so only a body can break it), each checked with CHECKS.

    Derandomized: the examples derive from the test, not a random seed, so CI repeats a run exactly. No deadline:
    the first request of a route pays for a cold start."""
    operation = openapi_schema(session, base_url)[route.resource][route.method]
    for mode in [GenerationMode.POSITIVE, *([GenerationMode.NEGATIVE] if operation.body else [])]:

        @settings(
            max_examples=examples,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def request_keeps_the_contract(case: Any) -> None:
            case.call_and_validate(base_url=base_url, session=session, checks=CHECKS, timeout=60)

        request_keeps_the_contract()
