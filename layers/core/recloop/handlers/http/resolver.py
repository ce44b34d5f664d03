"""The one way every API function builds its resolver: validation, error bodies, latency metrics."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.models import Server

from recloop import __version__
from recloop.adapters.redis import REDIS_ERRORS, RedisError
from recloop.container import get_container
from recloop.core.errors import RecLoopError
from recloop.handlers.errors import ApiError, error_body, status_of
from recloop.handlers.http.access import access_middleware
from recloop.handlers.http.request_body import MAX_BODY_BYTES, decode_base64_body, parse_json_body
from recloop.handlers.http.schemas import ErrorOut
from recloop.ops import cloudwatch
from recloop.ops.metrics import record_latency

logger = Logger(child=True)

API_TITLE = "RecLoop"
# Relative links: /docs, /redoc and api/v1/dashboard share their parent, under any stage path.
API_DESCRIPTION = (
    "Operators: the [dashboard](api/v1/dashboard) charts this API's JSON routes live; [ReDoc](redoc) is another "
    "view of this document."
)


def json_response(status_code: int, body: Any) -> Response:
    return Response(status_code=status_code, content_type=content_types.APPLICATION_JSON, body=body)


# What each error status means on this API; the body of every one is an ErrorOut.
ERROR_STATUSES = {
    400: "the body cannot be read safely: nested too deep, a number too long, or not valid UTF-8 text",
    401: "no valid credentials came with the request",
    403: "the caller may not do this, or not for this user",
    404: "no such resource",
    409: "refused in the current state; nothing was changed",
    413: f"the body is over {MAX_BODY_BYTES} bytes",
    415: "the body is not labelled application/json",
    422: "a field is invalid; `errors` names each one",
    500: "an unexpected failure, logged with the request id",
    502: "a function behind this route failed",
    503: "a dependency did not answer; nothing was changed, retry later",
    504: "a function behind this route did not answer in time; it may still be running",
}


def documented(
    *errors: int, bodies: dict[int, Any] | None = None, reads_body: bool = False, public: bool = False
) -> dict[int, Any]:
    """The OpenAPI responses of a route: every error status it can answer (those of any route, `errors`, and
    400/413/415 when it reads a body), then `bodies`, the statuses whose body is a model of its own
    (None: the route's return annotation)."""
    statuses = {422, 500, *errors, *(() if public else (401, 403)), *((400, 413, 415) if reads_body else ())}
    responses: dict[int, Any] = {
        status: {
            "description": ERROR_STATUSES[status],
            "content": {content_types.APPLICATION_JSON: {"model": ErrorOut}},
        }
        for status in sorted(statuses)
    }
    for status, model in (bodies or {200: None}).items():
        content = {} if model is None else {"content": {content_types.APPLICATION_JSON: {"model": model}}}
        responses[status] = {"description": "success" if status < 400 else ERROR_STATUSES[status], **content}
    return responses


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
    cloudwatch.record_latency(endpoint, elapsed_ms)
    try:
        record_latency(get_container().redis, endpoint, elapsed_ms)
    except REDIS_ERRORS as exc:  # metrics must never fail a request
        logger.warning("latency not recorded", extra={"error": repr(exc)})
    return response


def build_resolver(*routers: Router, swagger: bool = False) -> APIGatewayRestResolver:
    app = APIGatewayRestResolver(enable_validation=True, json_body_deserializer=parse_json_body)

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
        status = status_of(exc)
        if status >= 500:
            logger.warning("dependency unavailable", extra={"code": exc.code, "error": repr(exc)})
        elif exc.__cause__ is not None:  # the detail the body leaves out (e.g. why a model does not load)
            logger.warning("request refused", extra={"code": exc.code, "cause": repr(exc.__cause__)})
        return json_response(status, error_body(exc))

    @app.exception_handler(RedisError)
    def _store_unavailable(exc: RedisError) -> Response:
        logger.exception("feature store unavailable")
        return json_response(
            503, {"error": "feature_store_unavailable", "message": "the feature store did not answer; retry later"}
        )

    @app.exception_handler(RequestUnsupportedContentType)
    def _not_json(_: RequestUnsupportedContentType) -> Response:
        return json_response(415, {"error": "unsupported_media_type", "message": "send the body as application/json"})

    @app.not_found
    def _no_route(_: Exception) -> Response:
        return json_response(404, {"error": "no_route", "message": "no such route on this API"})

    @app.exception_handler(Exception)
    def _unexpected(exc: Exception) -> Response:
        # The body says nothing of the failure; the log has it, under the request id the body gives.
        logger.exception("unexpected failure")
        request_id = getattr(app.lambda_context, "aws_request_id", "")
        return json_response(
            500,
            {
                "error": "internal_error",
                "message": "an unexpected error occurred; it is logged",
                "request_id": request_id,
            },
        )

    app.use(middlewares=[_latency_middleware, access_middleware])
    for router in routers:
        app.include_router(router)
    if swagger:
        # A relative server: clients resolve it against the document's own URL, so "Try it out" calls the API where
        # the document was read, behind the local proxy (http://localhost:8000/) and on the stage URL (.../v1/) alike.
        # Powertools' default, the stage path (/v1), is wrong wherever the stage is not part of the path.
        app.enable_swagger(
            path="/docs",
            title=API_TITLE,
            version=__version__,
            description=API_DESCRIPTION,
            servers=[Server(url=".", description="the API that serves this document")],
        )
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
        return app.resolve(decode_base64_body(read_body_as_json(event)), context)

    if os.environ.get("POWERTOOLS_TRACE_DISABLED", "false").lower() in ("1", "true", "yes"):
        return handler
    from aws_lambda_powertools import Tracer

    return Tracer().capture_lambda_handler(handler)
