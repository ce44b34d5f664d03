"""Who calls, and whether they may: the principal API Gateway's authorizer vouched for, checked by the routes.

The authorizer (recloop.handlers.authorizer) verifies the bearer token and passes `principal`, `scope` and `user_id`
in the request context. Here:

- every route but the public ones needs that principal; without it the answer is 401, unless the function's
  configuration turns authentication off (AUTH_MODE=none: the local profile, in-process calls), and then anyone
  may do anything;
- the operator routes (/api/v1/mlops/...) and the catalogue need a service principal (403 otherwise);
- the routes that read or write one user's data refuse, with 403 naming the field, a user the caller may not act
  for (`require_acting_for`), before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from recloop.access.principal import Principal
from recloop.container import get_container
from recloop.core.settings import AuthMode
from recloop.handlers.errors import ApiError

# Open to anyone (the template marks them `Auth: {Authorizer: NONE}`).
PUBLIC_ROUTES = frozenset({"/api/v1/health", "/api/v1/metrics", "/api/v1/dashboard", "/docs", "/redoc"})
# For backend services only: operating the models and online learning, and writing the catalogue.
SERVICE_ROUTE_PREFIXES = ("/api/v1/mlops/", "/api/v1/items")


def caller_of(event: APIGatewayProxyEvent) -> Principal | None:
    """The principal of this request; None when authentication is off and no authorizer ran (anyone may do
    anything). 401 when authentication is on and no principal came with the request."""
    context = event.request_context.authorizer.get_context()
    if context.get("principal") is not None:
        try:
            return Principal.from_context(context)
        except ValueError as exc:
            raise _unauthenticated() from exc
    if get_container().settings.auth_mode is AuthMode.NONE:
        return None
    raise _unauthenticated()


def require_acting_for(event: APIGatewayProxyEvent, users: Iterable[tuple[str, str]]) -> None:
    """403 unless the caller may act for every `(field, user_id)` given, naming each field it may not."""
    principal = caller_of(event)
    if principal is None:
        return
    refused = [field for field, user_id in users if not principal.may_act_for(user_id)]
    if refused:
        reason = "names a user other than the one this caller's token is for"
        raise ApiError(
            403,
            "forbidden",
            f"{refused[0]}: {reason}" + (f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""),
            errors=[{"field": field, "reason": reason} for field in refused],
        )


def access_middleware(app: APIGatewayRestResolver, next_middleware: Callable[..., Response]) -> Response:
    """Authentication for every route but the public ones; a service principal for the service routes."""
    resource = app.current_event.resource
    if resource in PUBLIC_ROUTES:
        return next_middleware(app)
    principal = caller_of(app.current_event)
    if principal is not None and resource.startswith(SERVICE_ROUTE_PREFIXES) and not principal.may_operate:
        raise ApiError(403, "forbidden", "this route is for backend services: it needs a token of scope service")
    return next_middleware(app)


def _unauthenticated() -> ApiError:
    return ApiError(401, "unauthenticated", "this route needs a bearer token (Authorization: Bearer <token>)")
