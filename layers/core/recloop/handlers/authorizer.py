"""The API's Lambda authorizer (TOKEN type): verifies the client's bearer token and names the caller.

API Gateway calls it with the Authorization header and caches the answer per token (ReauthorizeEvery), so the
policy allows the whole stage for that principal; which users the caller may act for is checked by the routes
against the context returned here (`principal`, `scope`, `user_id`: recloop.handlers.http.access).

A token that does not verify answers "Unauthorized", the one error message API Gateway turns into a 401. A signing
key that cannot be read is a fault of the deployment: the function fails and API Gateway answers 500.
"""

from __future__ import annotations

import time
from typing import Any

from aws_lambda_powertools import Logger

from recloop.access.tokens import TokenError, verify_token
from recloop.container import get_container

logger = Logger(service="recloop-authorizer")

BEARER = "Bearer "


@logger.inject_lambda_context
def handle_authorize(event: dict[str, Any], context: Any) -> dict[str, Any]:
    header = event.get("authorizationToken") or ""
    if not header.startswith(BEARER):
        raise unauthorized("no Bearer token in the Authorization header")
    keys = get_container().signing_keys.verification_keys()
    try:
        principal = verify_token(header.removeprefix(BEARER).strip(), keys, now=time.time())
    except TokenError as exc:
        raise unauthorized(str(exc)) from None
    logger.info("token accepted", extra={"principal": principal.name, "scope": principal.scope.value})
    allow = {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": stage_arn(event["methodArn"])}
    return {
        "principalId": principal.name,
        "policyDocument": {"Version": "2012-10-17", "Statement": [allow]},
        "context": principal.as_context(),
    }


def unauthorized(reason: str) -> Exception:
    """The refusal API Gateway turns into a 401: exactly this message; the reason goes to the log only."""
    logger.info("token refused", extra={"reason": reason})
    return Exception("Unauthorized")


def stage_arn(method_arn: str) -> str:
    """Every method of the stage: `arn:...:<api-id>/<stage>/<METHOD>/<path>` becomes `arn:...:<api-id>/<stage>/*`."""
    api, stage, *_ = method_arn.split("/")
    return f"{api}/{stage}/*"
