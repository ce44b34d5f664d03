"""The Redis AUTH credentials: what a secret may hold, and when the provider reads it (moto Secrets Manager)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import redis
from botocore.exceptions import ClientError
from moto import mock_aws

from recloop.adapters.aws import forget_clients
from recloop.adapters.redis_credentials import (
    CredentialsUnavailableError,
    RedisCredentials,
    SecretCredentialProvider,
    parse_credentials,
    secret_credentials,
)
from recloop.adapters.secrets import Secret, SecretValueError
from recloop.core.settings import Settings
from tests.support.environment import REGION

TOKEN = "t0ken-with-64-characters-in-production"


@pytest.mark.parametrize(
    ("secret_string", "expected"),
    [
        (TOKEN, RedisCredentials(TOKEN)),
        (f"{TOKEN}\n", RedisCredentials(TOKEN)),  # written from a file
        (f'{{"password": "{TOKEN}"}}', RedisCredentials(TOKEN)),
        (f'{{"token": "{TOKEN}"}}', RedisCredentials(TOKEN)),
        (f'{{"username": "recloop", "password": "{TOKEN}"}}', RedisCredentials(TOKEN, "recloop")),
        ("{not-json}", RedisCredentials("{not-json}")),  # a token may start with a brace
        ('["a", "list"]', RedisCredentials('["a", "list"]')),
    ],
)
def test_a_secret_holds_a_bare_token_or_a_json_object(secret_string: str, expected: RedisCredentials) -> None:
    assert parse_credentials(secret_string) == expected


def test_auth_arguments_name_the_user_only_for_an_acl_user() -> None:
    assert RedisCredentials(TOKEN).auth_args == (TOKEN,)
    assert RedisCredentials(TOKEN, "recloop").auth_args == ("recloop", TOKEN)


@pytest.mark.parametrize(
    ("secret_string", "reason"),
    [
        ("", "empty"),
        ("\n", "empty"),
        ('{"user": "recloop", "pass": "hunter2"}', '"password" or "token"'),
        ('{"password": ""}', '"password" or "token"'),
        ('{"password": 12345}', '"password" or "token"'),
        ('{"username": ["x"], "password": "hunter2"}', '"username"'),
    ],
)
def test_an_unusable_secret_is_refused_without_quoting_it(secret_string: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as refused:
        parse_credentials(secret_string)
    assert "hunter2" not in str(refused.value) and "12345" not in str(refused.value)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    forget_clients()
    with mock_aws():
        yield boto3.client("secretsmanager", region_name=REGION)
    forget_clients()


class CountingSecret:
    """The adapter over moto, counting its reads."""

    def __init__(self, arn: str) -> None:
        self.secret = Secret(arn, REGION)
        self.reads = 0

    def read(self) -> str:
        self.reads += 1
        return self.secret.read()


def provider_for(arn: str, clock: Clock) -> tuple[SecretCredentialProvider, CountingSecret]:
    secret = CountingSecret(arn)
    return SecretCredentialProvider(secret.read, cache_seconds=300, retry_seconds=5, clock=clock), secret


def test_the_adapter_reads_the_current_secret_string(secrets: Any) -> None:
    arn = secrets.create_secret(Name="recloop/redis", SecretString=TOKEN)["ARN"]
    assert Secret(arn, REGION).read() == TOKEN
    secrets.put_secret_value(SecretId=arn, SecretString="next")
    assert Secret("recloop/redis", REGION).read() == "next"  # a name works as well as the ARN


def test_a_binary_secret_is_no_token(secrets: Any) -> None:
    arn = secrets.create_secret(Name="recloop/redis", SecretBinary=b"\x00\x01")["ARN"]
    with pytest.raises(SecretValueError):
        Secret(arn, REGION).read()


def test_new_connections_share_one_read_until_the_cache_expires(secrets: Any) -> None:
    arn = secrets.create_secret(Name="recloop/redis", SecretString=TOKEN)["ARN"]
    clock = Clock()
    provider, secret = provider_for(arn, clock)

    assert [provider.get_credentials() for _ in range(3)] == [(TOKEN,)] * 3
    assert secret.reads == 1
    secrets.put_secret_value(SecretId=arn, SecretString='{"username": "recloop", "password": "rotated"}')
    clock.now += 299
    assert provider.get_credentials() == (TOKEN,)
    clock.now += 1
    assert provider.get_credentials() == ("recloop", "rotated")
    assert secret.reads == 2


def test_refused_credentials_are_read_again_at_once_then_at_most_every_retry_interval(secrets: Any) -> None:
    arn = secrets.create_secret(Name="recloop/redis", SecretString=TOKEN)["ARN"]
    clock = Clock()
    provider, secret = provider_for(arn, clock)
    provider.get_credentials()

    secrets.put_secret_value(SecretId=arn, SecretString="rotated")
    clock.now += 1
    assert provider.refused() is True  # the kept value predates the refusal: worth a fresh read
    assert provider.get_credentials() == ("rotated",)
    assert secret.reads == 2

    # A secret that is wrong in itself: refused again, it is not read again for every connection attempt.
    assert provider.refused() is False
    assert provider.get_credentials() == ("rotated",) and secret.reads == 2
    clock.now += 5
    assert provider.refused() is True
    provider.get_credentials()
    assert secret.reads == 3


def test_a_missing_secret_is_redis_unreachable_named_generically(secrets: Any) -> None:
    arn = f"arn:aws:secretsmanager:{REGION}:123456789012:secret:recloop/absent-AbCdEf"
    clock = Clock()
    provider, secret = provider_for(arn, clock)

    with pytest.raises(redis.ConnectionError) as failed:
        provider.get_credentials()
    assert isinstance(failed.value, CredentialsUnavailableError)
    assert str(failed.value) == "the Redis credentials could not be read"
    assert failed.value.__cause__ is None and failed.value.__context__ is None  # nothing chains the ARN in
    # redis-py retries a connection error at once: those retries do not each call Secrets Manager.
    for _ in range(10):
        with pytest.raises(CredentialsUnavailableError):
            provider.get_credentials()
    assert secret.reads == 1
    clock.now += 5
    with pytest.raises(CredentialsUnavailableError):
        provider.get_credentials()
    assert secret.reads == 2  # tried again after the retry interval


def access_denied() -> str:
    raise ClientError(
        {"Error": {"Code": "AccessDeniedException", "Message": "User arn:aws:iam::1:role/x is not authorized"}},
        "GetSecretValue",
    )


def test_no_permission_reads_as_unavailable_credentials() -> None:
    provider = SecretCredentialProvider(access_denied, clock=Clock())
    with pytest.raises(CredentialsUnavailableError, match=r"^the Redis credentials could not be read$"):
        provider.get_credentials()


def test_kept_credentials_outlive_a_failed_refresh_unless_refused(secrets: Any) -> None:
    arn = secrets.create_secret(Name="recloop/redis", SecretString=TOKEN)["ARN"]
    clock = Clock()
    provider, _ = provider_for(arn, clock)
    provider.get_credentials()
    secrets.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)

    clock.now += 300  # due, but Secrets Manager fails: the kept token may still be good
    assert provider.get_credentials() == (TOKEN,)
    clock.now += 5
    provider.refused()  # now it is known bad, and nothing replaces it
    with pytest.raises(CredentialsUnavailableError):
        provider.get_credentials()


def test_the_provider_exists_only_when_a_secret_is_configured() -> None:
    assert secret_credentials(Settings.from_env({"REDIS_URL": "rediss://cache:6379"})) is None
    settings = Settings.from_env({"REDIS_URL": "rediss://cache:6379", "REDIS_AUTH_SECRET_ARN": "recloop/redis"})
    assert isinstance(secret_credentials(settings), SecretCredentialProvider)
