"""Schemathesis over every route of the OpenAPI document, through the API Gateway of the stack in LocalStack: the
checks of tests/handlers/test_openapi_fuzz.py, with the gateway, the deployed functions and their invocations of
one another in the path, at fewer examples per route."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.e2e.conftest import Http
from tests.support.gateway import ApiRoute, template_routes
from tests.support.openapi_fuzz import documented_routes, fuzz_route, openapi_schema

pytestmark = pytest.mark.e2e

EXAMPLES_PER_ROUTE = 10
API_ROUTES = [route for route in template_routes() if route.resource != "/docs"]


@pytest.fixture
def session(http: Http) -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def test_the_gateway_serves_a_document_of_every_deployed_route(http: Http, session: requests.Session) -> None:
    assert documented_routes(openapi_schema(session, http.base_url)) == {(r.method, r.resource) for r in API_ROUTES}


@pytest.mark.parametrize("route", API_ROUTES, ids=lambda route: f"{route.method} {route.resource}")
def test_route_keeps_its_openapi_contract_through_the_gateway(
    http: Http, session: requests.Session, route: ApiRoute
) -> None:
    fuzz_route(session, http.base_url, route, EXAMPLES_PER_ROUTE)
