"""The authorizer function (functions/authorizer) as API Gateway calls it: a TOKEN event in, an IAM policy and the
caller's context out, or "Unauthorized" (API Gateway's 401) for a token it does not honour."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from local.inprocess import LambdaContext, load_function
from recloop.access.keys import SigningKeyError
from recloop.container import reset_container
from tests.support.environment import REGION
from tests.support.tokens import ALICE, SERVICE, create_signing_secret, rotate_signing_secret, token_for

METHOD_ARN = "arn:aws:execute-api:us-east-1:123456789012:abcdef1234/v1/POST/api/v1/events/batch"
STAGE_ARN = "arn:aws:execute-api:us-east-1:123456789012:abcdef1234/v1/*"
OTHER_KEY = "a-key-this-stack-never-had-0123456789abcdef"

Authorizer = Callable[[str], dict[str, Any]]


@pytest.fixture
def secret_arn(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> str:
    arn = create_signing_secret()
    monkeypatch.setenv("AUTH_SIGNING_SECRET_ARN", arn)
    reset_container()
    return arn


@pytest.fixture
def authorize(secret_arn: str) -> Authorizer:
    handler = load_function("authorizer").lambda_handler

    def call(authorization: str) -> dict[str, Any]:
        event = {"type": "TOKEN", "authorizationToken": authorization, "methodArn": METHOD_ARN}
        return handler(event, LambdaContext())

    return call


def test_a_user_token_is_allowed_the_stage_with_its_user_in_the_context(authorize: Authorizer) -> None:
    assert authorize(f"Bearer {token_for(ALICE)}") == {
        "principalId": "alice",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": STAGE_ARN}],
        },
        "context": {"principal": "alice", "scope": "user", "user_id": "alice"},
    }


def test_a_service_token_names_no_user(authorize: Authorizer) -> None:
    answer = authorize(f"Bearer {token_for(SERVICE)}")
    assert answer["principalId"] == "checkout-backend"
    assert answer["context"] == {"principal": "checkout-backend", "scope": "service", "user_id": ""}


def unsigned(claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(f"Bearer {token_for(ALICE, key=OTHER_KEY)}", id="signed-with-another-key"),
        pytest.param(f"Bearer {token_for(ALICE, now=1_700_000_000, ttl_seconds=60)}", id="expired"),
        pytest.param("Bearer " + unsigned({"sub": "x", "scope": "service", "exp": 4_102_444_800}), id="alg-none"),
        pytest.param(token_for(ALICE), id="no-bearer-prefix"),
        pytest.param("Basic YWxpY2U6c2VjcmV0", id="basic-credentials"),
        pytest.param("Bearer ", id="empty"),
        pytest.param("Bearer not.a.token", id="malformed"),
    ],
)
def test_a_token_it_does_not_honour_is_unauthorized(authorize: Authorizer, authorization: str) -> None:
    with pytest.raises(Exception) as refused:
        authorize(authorization)
    assert (type(refused.value), str(refused.value)) == (Exception, "Unauthorized")


def test_tokens_of_the_previous_key_keep_working_after_a_rotation(authorize: Authorizer, secret_arn: str) -> None:
    before = token_for(ALICE)
    rotate_signing_secret(secret_arn, OTHER_KEY)
    reset_container()  # a new instance, or one whose keys are five minutes old
    assert authorize(f"Bearer {before}")["context"]["user_id"] == "alice"
    assert authorize(f"Bearer {token_for(ALICE, key=OTHER_KEY)}")["context"]["user_id"] == "alice"


def test_an_unreadable_signing_key_is_a_fault_not_a_refusal(authorize: Authorizer, secret_arn: str) -> None:
    """API Gateway answers 500 for an authorizer that fails: the client is not told its token is bad."""
    boto3.client("secretsmanager", region_name=REGION).delete_secret(
        SecretId=secret_arn, ForceDeleteWithoutRecovery=True
    )
    with pytest.raises(SigningKeyError):
        authorize(f"Bearer {token_for(ALICE)}")
