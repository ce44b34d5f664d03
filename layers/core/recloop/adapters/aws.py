"""AWS clients: one per service, region and purpose for the life of the process.

boto3 and botocore are imported on first use, so functions that never call AWS skip their import at cold start.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

# Fail fast: a Lambda should answer 503 within its API timeout, not hang on a dead endpoint.
AWS_CLIENT_OPTIONS = {"connect_timeout": 2, "read_timeout": 5, "retries": {"max_attempts": 3, "mode": "standard"}}
# Health probes answer for the moment: one quick attempt.
PROBE_CLIENT_OPTIONS = {"connect_timeout": 1, "read_timeout": 2, "retries": {"max_attempts": 1, "mode": "standard"}}
# Synchronous invocations of another function (a manual online update): the reply takes as long as the work, within
# API Gateway's 29 s; never retried by the SDK (a retry would run the work twice).
INVOKE_CLIENT_OPTIONS = {"connect_timeout": 2, "read_timeout": 25, "retries": {"max_attempts": 1, "mode": "standard"}}
_CLIENT_OPTIONS = {"default": AWS_CLIENT_OPTIONS, "probe": PROBE_CLIENT_OPTIONS, "invoke": INVOKE_CLIENT_OPTIONS}


@lru_cache(maxsize=16)
def aws_client(name: str, region: str, mode: str = "default") -> Any:
    """A boto3 client; `mode` is "default", "probe" (one quick attempt) or "invoke" (long read, no retry)."""
    import boto3
    from botocore.config import Config

    # AWS_ENDPOINT_URL (LocalStack, moto server) is honoured by boto3 itself.
    return boto3.client(name, region_name=region, config=Config(**_CLIENT_OPTIONS[mode]))


def forget_clients() -> None:
    """Drop every cached client (tests change the environment between cases)."""
    aws_client.cache_clear()


def aws_errors() -> tuple[type[BaseException], ...]:
    """What an AWS call raises when the service refused or could not be reached. A function, so that an
    `except aws_errors():` clause imports botocore only when an exception actually reaches it."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError)


def error_code(exc: BaseException) -> str:
    """The service's error code of a ClientError ("" for anything else)."""
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
