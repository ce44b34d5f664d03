"""The domain's errors, by what a caller can do about them.

Capabilities raise subclasses of these four kinds, each with a `code` that names the error in API bodies and
`details` that identify what it is about (a version, a field). `recloop.handlers.errors` alone turns a kind into
an HTTP status, so the domain never speaks HTTP and no route keeps its own table.
"""

from __future__ import annotations


class RecLoopError(Exception):
    """Base of every domain error. `hint` tells the caller what to do next; it is added to the API message."""

    code = "error"
    hint = ""

    def __init__(self, message: str, **details: str) -> None:
        super().__init__(message)
        self.details = details


class NotFoundError(RecLoopError, LookupError):
    """What was asked for does not exist."""

    code = "not_found"


class ConflictError(RecLoopError):
    """Refused in the current state (something else runs, or changed meanwhile, or would break); state unchanged."""

    code = "conflict"


class InvalidInputError(RecLoopError, ValueError):
    """A value that can never be valid; `details["field"]` names it."""

    code = "validation_error"


class UnavailableError(RecLoopError):
    """A dependency did not answer; nothing was changed, a retry may succeed."""

    code = "unavailable"
