"""API Gateway in this process: HTTP requests (through `requests`) answered by the functions template.yaml routes
them to, each called with the REST proxy event API Gateway would send. And Lambda's synchronous invoke, answered
by the invoked function in this process too.

What tools that speak HTTP (Schemathesis) use to reach the in-process handlers: the route table is the template's,
so a route in the OpenAPI document that the template does not deploy fails the request instead of being guessed.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import requests
from cfnlint.decode import decode
from requests.adapters import HTTPAdapter
from urllib3 import HTTPHeaderDict, HTTPResponse

from local.inprocess import LambdaContext, load_function
from tests.support.environment import ROOT

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]
STAGE = "v1"


@dataclass(frozen=True)
class ApiRoute:
    method: str
    resource: str  # e.g. /api/v1/mlops/models/{version}
    function: str  # the folder under functions/

    @property
    def pattern(self) -> re.Pattern[str]:
        # A path parameter is one segment; API Gateway matches the path still percent-encoded.
        return re.compile("^" + re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(self.resource)) + "$")


def template_routes() -> list[ApiRoute]:
    """Every `Type: Api` event of the template's functions, literal resources before parameterised ones (API
    Gateway prefers /models/rollback to /models/{version})."""
    template, problems = decode(str(ROOT / "template.yaml"))
    assert not problems, problems
    routes = []
    for resource in template["Resources"].values():
        properties = resource.get("Properties") or {}
        if resource.get("Type") != "AWS::Serverless::Function" or not isinstance(properties.get("CodeUri"), str):
            continue
        function = properties["CodeUri"].rstrip("/").split("/")[-1]
        for event in (properties.get("Events") or {}).values():
            if event.get("Type") == "Api":
                api = event["Properties"]
                routes.append(ApiRoute(api["Method"].upper(), api["Path"], function))
    return sorted(routes, key=lambda route: "{" in route.resource)


class InProcessGateway(HTTPAdapter):
    """A `requests` transport: each request becomes a proxy event for the function its route belongs to, and the
    function's reply the HTTP response."""

    def __init__(self, routes: list[ApiRoute], handlers: dict[str, Handler]) -> None:
        super().__init__()
        self.routes = routes
        self.handlers = handlers

    def send(self, request: requests.PreparedRequest, **_: Any) -> requests.Response:
        url = urlsplit(request.url or "")
        route, parameters = self._route(request.method or "GET", url.path)
        reply = self.handlers[route.function](self._event(request, url, route, parameters), LambdaContext())
        headers = HTTPHeaderDict(reply.get("headers") or {})
        for name, values in (reply.get("multiValueHeaders") or {}).items():
            for value in values:
                headers.add(name, value)
        body = reply.get("body") or ""
        raw = HTTPResponse(
            body=io.BytesIO(body.encode() if isinstance(body, str) else body),
            headers=headers,
            status=reply["statusCode"],
            reason=HTTPStatus(reply["statusCode"]).phrase,
            version=11,
            preload_content=False,
            decode_content=False,
        )
        return self.build_response(request, raw)

    def _route(self, method: str, path: str) -> tuple[ApiRoute, dict[str, str]]:
        for route in self.routes:
            match = route.pattern.match(path)
            if route.method == method and match:
                return route, {name: unquote(value) for name, value in match.groupdict().items()}
        raise AssertionError(f"template.yaml deploys no route for {method} {path}")

    @staticmethod
    def _event(
        request: requests.PreparedRequest, url: Any, route: ApiRoute, parameters: dict[str, str]
    ) -> dict[str, Any]:
        headers = dict(request.headers)
        query = parse_qsl(url.query, keep_blank_values=True)
        body = request.body.decode("utf-8", "surrogateescape") if isinstance(request.body, bytes) else request.body
        return {
            "resource": route.resource,
            "path": url.path,
            "httpMethod": route.method,
            "headers": headers,
            "multiValueHeaders": {name: [value] for name, value in headers.items()},
            "queryStringParameters": dict(query) or None,
            "multiValueQueryStringParameters": {k: [v for n, v in query if n == k] for k, _ in query} or None,
            "pathParameters": parameters or None,
            "stageVariables": None,
            "requestContext": {
                "resourcePath": route.resource,
                "httpMethod": route.method,
                "path": f"/{STAGE}{url.path}",
                "stage": STAGE,
                "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
                "identity": {"sourceIp": "127.0.0.1", "userAgent": headers.get("User-Agent", "")},
            },
            "body": body,
            "isBase64Encoded": False,
        }


class InProcessLambda:
    """A Lambda client whose synchronous invoke runs the named function here and answers as Lambda does: the reply,
    or the error reply with `FunctionError` when the handler raised."""

    def __init__(self, handlers: dict[str, Handler]) -> None:
        self.handlers = handlers

    def invoke(self, FunctionName: str, InvocationType: str, Payload: bytes) -> dict[str, Any]:  # noqa: N803
        assert InvocationType == "RequestResponse"
        try:
            reply, error = self.handlers[FunctionName](json.loads(Payload), LambdaContext()), None
        except Exception as exc:  # what Lambda does with an unhandled exception
            reply, error = {"errorType": type(exc).__name__, "errorMessage": str(exc)}, "Unhandled"
        answer: dict[str, Any] = {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(reply).encode())}
        return {**answer, "FunctionError": error} if error else answer


def http_handlers(routes: list[ApiRoute]) -> dict[str, Handler]:
    """The entry point of every function behind the routes, imported the way Lambda does (env must be set)."""
    return {name: load_function(name).lambda_handler for name in {route.function for route in routes}}
