"""The one way the HTTP edge reads a request body: bounded in size, nesting and number length, valid Unicode.

Python's JSON parser recurses once per nesting level, refuses integers over 4,300 digits with a ValueError and
accepts lone UTF-16 surrogates (`"\\ud800"`) that no UTF-8 encoder, and so no stream record, can carry. Each of
these escaped as a 5xx before; here each is a 4xx that names the problem, decided before anything is written.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from recloop.handlers.errors import ApiError

# API Gateway takes 10 MB; the largest valid request (a full batch of events with small contexts, or a full
# item upsert) is a few hundred KB, so anything past 1 MiB is refused before it is parsed.
MAX_BODY_BYTES = 1024 * 1024
# Nesting levels of the whole body; the deepest valid body (a batch event's context) needs far fewer.
MAX_BODY_DEPTH = 32
# No field takes a number anywhere near this long; Python itself refuses integers past 4,300 digits.
MAX_INTEGER_DIGITS = 100

# A JSON string (escapes included) or one bracket: brackets inside strings do not nest.
_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
# A \\uD800-\\uDFFF escape: the only way a lone surrogate gets into a parsed body.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def malformed_body(field: str, reason: str) -> ApiError:
    return ApiError(400, "malformed_body", f"{field}: {reason}", errors=[{"field": field, "reason": reason}])


def parse_json_body(text: str) -> Any:
    """The body as JSON, or ApiError 413 (too large) / 400 (not safely readable). A syntax error stays a
    JSONDecodeError, which the resolver answers as a 422 naming the body."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise malformed_body("body", "is not valid UTF-8 text") from None
    if size > MAX_BODY_BYTES:
        raise ApiError(
            413,
            "body_too_large",
            f"the request body is {size} bytes; at most {MAX_BODY_BYTES} are accepted",
            limit_bytes=MAX_BODY_BYTES,
        )
    _check_depth(text)
    value = json.loads(text, parse_int=_bounded_int)
    if _SURROGATE_ESCAPE.search(text):
        _check_unicode(value, "body")
    return value


def _check_depth(text: str) -> None:
    depth = 0
    for token in _STRING_OR_BRACKET.finditer(text):
        bracket = token.group()
        if bracket in "[{":
            depth += 1
            if depth > MAX_BODY_DEPTH:
                raise malformed_body("body", f"is nested deeper than {MAX_BODY_DEPTH} levels")
        elif bracket in "]}":
            depth -= 1


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise malformed_body("body", f"holds an integer of more than {MAX_INTEGER_DIGITS} digits")
    return int(digits)


def _check_unicode(value: Any, path: str) -> None:
    """Name the first string (key or value) that holds a lone surrogate. Depth is bounded by `_check_depth`."""
    if isinstance(value, str):
        if not _encodable(value):
            raise malformed_body(path.removeprefix("body."), "holds a lone UTF-16 surrogate, which is not text")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not _encodable(key):
                raise malformed_body(path.removeprefix("body."), "has a key with a lone UTF-16 surrogate")
            _check_unicode(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_unicode(item, f"{path}.{index}")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def decode_base64_body(event: dict) -> dict:
    """A base64 body (binary media types) as text, invalid UTF-8 kept as surrogate escapes so that
    `parse_json_body` refuses it with a 400 instead of the decoder failing the request."""
    if event.get("isBase64Encoded") and event.get("body"):
        try:
            raw = base64.b64decode(event["body"], validate=True)
        except binascii.Error:
            raw = b"\xff"  # not base64 either: a body that cannot be text
        event["body"] = raw.decode("utf-8", "surrogateescape")
        event["isBase64Encoded"] = False
    return event
