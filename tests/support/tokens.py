"""Client tokens for tests: a fixed signing key, its secret in moto, and tokens for any principal."""

from __future__ import annotations

import time

from recloop.access.principal import Principal, Scope
from recloop.access.tokens import issue_token
from tests.support.environment import REGION

# The key of the samples in events/authorizer/ (their tokens were signed with it and expire in 2100).
SAMPLE_SIGNING_KEY = "recloop-sample-signing-key-0123456789abcdef"
SIGNING_SECRET_NAME = "recloop-test-token-signing-key"

SERVICE = Principal("checkout-backend", Scope.SERVICE)
ALICE = Principal("alice", Scope.USER, "alice")


def create_signing_secret(key: str = SAMPLE_SIGNING_KEY) -> str:
    """The signing key as the template keeps it (a secret whose SecretString is the bare key), in moto; its ARN."""
    import boto3

    client = boto3.client("secretsmanager", region_name=REGION)
    return client.create_secret(Name=SIGNING_SECRET_NAME, SecretString=key)["ARN"]


def rotate_signing_secret(secret_id: str, key: str) -> None:
    """What an operator's rotation does: a new current value; the one before becomes AWSPREVIOUS."""
    import boto3

    boto3.client("secretsmanager", region_name=REGION).put_secret_value(SecretId=secret_id, SecretString=key)


def token_for(
    principal: Principal, key: str = SAMPLE_SIGNING_KEY, ttl_seconds: float = 3600, now: float | None = None
) -> str:
    return issue_token(principal, key.encode(), now=time.time() if now is None else now, ttl_seconds=ttl_seconds)
