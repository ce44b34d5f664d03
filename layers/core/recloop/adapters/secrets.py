"""Secrets Manager: the current value of one secret, read when asked (callers decide how long to keep it)."""

from __future__ import annotations

from recloop.adapters.aws import aws_client


class SecretValueError(ValueError):
    """The secret exists but holds no text (a binary secret, or an empty one)."""


class Secret:
    """One secret, named by ARN or name. The client is built on the first read, so a cold start that never needs
    the secret never imports boto3."""

    def __init__(self, secret_id: str, region: str) -> None:
        self.secret_id = secret_id
        self.region = region

    def read(self, stage: str = "AWSCURRENT") -> str:
        """The SecretString of the version labelled `stage` (AWSCURRENT; AWSPREVIOUS is the one before the last
        rotation). Raises `aws_errors()` when the secret or that version is missing, not readable or the service is
        unreachable, and SecretValueError when it holds no text."""
        client = aws_client("secretsmanager", self.region)
        response = client.get_secret_value(SecretId=self.secret_id, VersionStage=stage)
        value = response.get("SecretString")
        if not value:
            raise SecretValueError("the secret has no SecretString")
        return str(value)
