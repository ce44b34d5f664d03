"""The one way every API function builds its resolver: validation, error bodies, latency metrics."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError

from recloop import __version__
from recloop.adapters.redis import REDIS_ERRORS, RedisError
from recloop.container import get_container
from recloop.core.errors import RecLoopError
from recloop.handlers.errors import ApiError, error_body, status_of
from recloop.ops.metrics import record_latency

logger = Logger(child=True)

API_TITLE = "RecLoop"


def json_response(status_code: int, body: Any) -> Response:
    return Response(status_code=status_code, content_type=content_types.APPLICATION_JSON, body=body)


def field_errors(errors: list[dict[str, Any]]) -> list[dict[str, str]]:
    """pydantic errors as ``{"field", "reason"}`` pairs, the field as a dotted path inside the body."""
    described = []
    for err in errors:
        loc = [str(part) for part in err.get("loc", ()) if part != "body"]
        if err.get("type") == "json_invalid":
            described.append({"field": "body", "reason": f"not valid JSON ({err.get('ctx', {}).get('error', '')})"})
            continue
        described.append({"field": ".".join(loc) or "body", "reason": err.get("msg", err.get("type", "invalid"))})
    return described


FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


def read_body_as_json(event: dict) -> dict:
    """Every body this API takes is JSON; `curl -d` without a header labels it as a form, so read it as JSON.

    Done on the raw event because Powertools validates the body before any middleware runs.
    """
    headers = event.get("headers") or {}
    for name in [n for n in headers if n.lower() == "content-type"]:
        if headers[name].startswith(FORM_CONTENT_TYPE):
            headers[name] = content_types.APPLICATION_JSON
    return event


def _latency_middleware(app: APIGatewayRestResolver, next_middleware: Callable[..., Response]) -> Response:
    started = time.perf_counter()
    response = next_middleware(app)
    elapsed_ms = (time.perf_counter() - started) * 1000
    endpoint = f"{app.current_event.http_method} {app.current_event.resource}"
    try:
        record_latency(get_container().redis, endpoint, elapsed_ms)
    except REDIS_ERRORS as exc:  # metrics must never fail a request
        logger.warning("latency not recorded", extra={"error": repr(exc)})
    return response


def build_resolver(*routers: Router, swagger: bool = False) -> APIGatewayRestResolver:
    app = APIGatewayRestResolver(enable_validation=True)

    @app.exception_handler(RequestValidationError)
    def _invalid_request(exc: RequestValidationError) -> Response:
        errors = field_errors(list(exc.errors()))
        summary = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        return json_response(422, {"error": "validation_error", "message": summary, "errors": errors})

    @app.exception_handler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return json_response(exc.status_code, exc.body)

    @app.exception_handler(RecLoopError)
    def _domain_error(exc: RecLoopError) -> Response:
        return json_response(status_of(exc), error_body(exc))

    @app.exception_handler(RedisError)
    def _store_unavailable(exc: RedisError) -> Response:
        logger.exception("feature store unavailable")
        return json_response(
            503, {"error": "feature_store_unavailable", "message": "the feature store did not answer; retry later"}
        )

    app.use(middlewares=[_latency_middleware])
    for router in routers:
        app.include_router(router)
    if swagger:
        app.enable_swagger(path="/docs", title=API_TITLE, version=__version__)
    return app


def api_handler(app: APIGatewayRestResolver) -> Callable[[dict, Any], dict]:
    """The Lambda entry point for a resolver, with Powertools logging and metrics, and tracing when enabled.

    The Powertools Tracer loads the X-Ray SDK (and botocore) at cold start, about 0.4 s, so it is only built
    when POWERTOOLS_TRACE_DISABLED is false; Lambda's own active tracing records every invocation regardless.
    """
    from aws_lambda_powertools import Metrics
    from aws_lambda_powertools.logging import correlation_paths

    root_logger, metrics = Logger(), Metrics()

    @root_logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
    @metrics.log_metrics(capture_cold_start_metric=True)
    def handler(event: dict, context: Any) -> dict:
        return app.resolve(read_body_as_json(event), context)

    if os.environ.get("POWERTOOLS_TRACE_DISABLED", "false").lower() in ("1", "true", "yes"):
        return handler
    from aws_lambda_powertools import Tracer

    return Tracer().capture_lambda_handler(handler)
