"""RecLoop's Lambda handlers called in this process, with API Gateway proxy events built from the samples in
events/: what the handler tests and the latency benchmarks drive (no LocalStack, no HTTP)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EVENTS_DIR = ROOT / "events"


def load_function(name: str) -> ModuleType:
    """Import functions/<name>/app.py as its own module (every handler file is called app.py)."""
    path = ROOT / "functions" / name / "app.py"
    spec = importlib.util.spec_from_file_location(f"recloop_fn_{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class LambdaContext:
    function_name = "recloop-test"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:recloop-test"
    aws_request_id = "00000000-0000-0000-0000-000000000000"


class ApiClient:
    """Calls handlers in-process with API Gateway proxy events built from the samples in events/.

    `authorizer` is the context API Gateway's authorizer would pass (`Principal.as_context()`): None, as with
    authentication off, sends none.
    """

    def __init__(self, authorizer: dict[str, str] | None = None) -> None:
        self.authorizer = authorizer
        self.functions = {name: load_function(name) for name in ("event", "recommend", "ops", "mlops")}
        self.template = json.loads((EVENTS_DIR / "event" / "record_a_click.json").read_text())

    def request(
        self,
        function: str,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw_body: str | None = None,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        response = self.respond(function, method, path, body, raw_body=raw_body, headers=headers, query=query)
        payload = response["body"]
        if response.get("headers", {}).get("Content-Type", "").startswith("application/json") or (
            payload and payload[:1] in "{["
        ):
            payload = json.loads(payload)
        return response["statusCode"], payload

    def respond(
        self,
        function: str,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw_body: str | None = None,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """The handler's whole response (status, headers, body as sent)."""
        event = json.loads(json.dumps(self.template))
        event.update(
            httpMethod=method,
            path=path,
            resource=path,
            isBase64Encoded=False,
            pathParameters=None,
            queryStringParameters=query,
            multiValueQueryStringParameters={k: [v] for k, v in query.items()} if query else None,
        )
        event["requestContext"].update(httpMethod=method, resourcePath=path, path=f"/v1{path}")
        if self.authorizer is not None:
            event["requestContext"]["authorizer"] = {"principalId": self.authorizer["principal"], **self.authorizer}
        event["body"] = raw_body if raw_body is not None else (None if body is None else json.dumps(body))
        event["headers"] = {"Content-Type": "application/json", **(headers or {})}
        event["multiValueHeaders"] = {k: [v] for k, v in event["headers"].items()}
        return self.functions[function].lambda_handler(event, LambdaContext())

    def post_event(self, **body: Any) -> tuple[int, Any]:
        return self.request("event", "POST", "/api/v1/event", body)

    def recommend(self, user_id: str, n: int = 10, **extra: Any) -> tuple[int, Any]:
        return self.request(
            "recommend", "POST", "/api/v1/recommend", {"user_id": user_id, "num_recommendations": n, **extra}
        )
