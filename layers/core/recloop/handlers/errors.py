"""Domain errors as answers: the one place that turns an error's kind into an HTTP status and a JSON body.

HTTP routes get these through the resolver's exception handlers; functions invoked directly (the online-update
function's rollback) reply with `refusal(exc)`, which carries the same status for the route that relays it.
"""

from __future__ import annotations

from typing import Any

from recloop.core.errors import ConflictError, InvalidInputError, NotFoundError, RecLoopError, UnavailableError

STATUS_BY_KIND: tuple[tuple[type[RecLoopError], int], ...] = (
    (NotFoundError, 404),
    (ConflictError, 409),
    (InvalidInputError, 422),
    (UnavailableError, 503),
)


class ApiError(Exception):
    """An answer other than success, decided by a route: a status code and a JSON body naming what went wrong."""

    def __init__(self, status_code: int, error: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = {"error": error, "message": message, **extra}


def status_of(exc: RecLoopError) -> int:
    return next((status for kind, status in STATUS_BY_KIND if isinstance(exc, kind)), 500)


def message_of(exc: RecLoopError) -> str:
    return f"{exc}; {exc.hint}" if exc.hint else str(exc)


# A dependency's failure is told in these words only: its own message names hosts, ARNs and accounts.
UNAVAILABLE_MESSAGE = "a service this request needs did not answer; nothing was changed, retry later"


def error_body(exc: RecLoopError) -> dict[str, Any]:
    if isinstance(exc, InvalidInputError):
        field = exc.details.get("field", "body")
        errors = [{"field": field, "reason": str(exc)}]
        return {"error": exc.code, "message": f"{field}: {exc}", "errors": errors}
    if status_of(exc) >= 500:
        return {"error": exc.code, "message": UNAVAILABLE_MESSAGE, **exc.details}
    return {"error": exc.code, "message": message_of(exc), **exc.details}


def api_error(exc: RecLoopError) -> ApiError:
    body = error_body(exc)
    return ApiError(status_of(exc), body.pop("error"), body.pop("message"), **body)


def refusal(exc: RecLoopError) -> dict[str, Any]:
    """The reply of a directly invoked function that refused a request (a reply, not a function error)."""
    return {"status": "refused", "status_code": status_of(exc), **error_body(exc)}
