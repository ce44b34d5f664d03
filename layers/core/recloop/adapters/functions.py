"""Synchronous invocation of another Lambda function, with what can go wrong told apart."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from recloop.core.errors import UnavailableError


class InvocationTimeoutError(UnavailableError):
    """The function did not answer in time; it may still be running."""


class NotInvokedError(UnavailableError):
    """The function could not be invoked at all."""


@dataclass(frozen=True)
class Invocation:
    reply: dict[str, Any] | None  # the function's JSON reply, None when it was not a JSON object
    function_error: str | None  # set when the function raised (the reply then describes the error)


def invoke(lambda_client: Any, function_name: str, event: dict[str, Any]) -> Invocation:
    from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError

    try:
        response = lambda_client.invoke(
            FunctionName=function_name, InvocationType="RequestResponse", Payload=json.dumps(event).encode()
        )
        payload = response["Payload"].read()
    except ReadTimeoutError as exc:
        raise InvocationTimeoutError(str(exc)) from exc
    except (ClientError, BotoCoreError) as exc:
        raise NotInvokedError(str(exc)) from exc
    try:
        reply = json.loads(payload) if payload else None
    except ValueError:
        reply = None
    return Invocation(reply if isinstance(reply, dict) else None, response.get("FunctionError"))
