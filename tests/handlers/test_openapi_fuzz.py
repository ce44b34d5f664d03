"""Schemathesis over every route of the OpenAPI document, against the functions in this process.

Requests go through `requests` to an in-process API Gateway (tests/support/gateway.py): the template's route table
picks the function, which runs over real Redis and moto S3 and Kinesis. The online-learning routes invoke the
online-update function, which runs here too. No route is left out: one that needs what a fresh stack lacks (a
trained model, a checkpoint) answers its declared 404 or 409.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from local.inprocess import load_function
from recloop.container import get_container, reset_container
from tests.support.environment import REGION
from tests.support.gateway import ApiRoute, InProcessGateway, InProcessLambda, http_handlers, template_routes
from tests.support.openapi_fuzz import documented_routes, fuzz_route, openapi_schema
from tests.support.retraining import pass_through_state_machine

# Valid requests per route; as many again that break the schema, for each route that takes a body.
EXAMPLES_PER_ROUTE = 50
BASE_URL = "http://recloop.in-process"
ONLINE_UPDATE = "recloop-online-update"
ROUTES = template_routes()
API_ROUTES = [route for route in ROUTES if route.resource != "/docs"]  # /docs serves the document itself


@pytest.fixture
def gateway(aws: dict[str, Any], redis_client: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[requests.Session]:
    monkeypatch.setenv("ONLINE_UPDATE_FUNCTION_NAME", ONLINE_UPDATE)
    monkeypatch.setenv("RETRAIN_STATE_MACHINE_ARN", pass_through_state_machine(REGION))
    reset_container()
    online_update = InProcessLambda({ONLINE_UPDATE: load_function("online_update").lambda_handler})
    monkeypatch.setattr(get_container(), "invoke_client", lambda: online_update)
    session = requests.Session()
    session.mount(BASE_URL, InProcessGateway(ROUTES, http_handlers(ROUTES)))
    yield session
    session.close()


def test_the_openapi_document_describes_every_deployed_route(gateway: requests.Session) -> None:
    assert documented_routes(openapi_schema(gateway, BASE_URL)) == {(r.method, r.resource) for r in API_ROUTES}


@pytest.mark.parametrize("route", API_ROUTES, ids=lambda route: f"{route.method} {route.resource}")
def test_route_keeps_its_openapi_contract(gateway: requests.Session, route: ApiRoute) -> None:
    fuzz_route(gateway, BASE_URL, route, EXAMPLES_PER_ROUTE)
