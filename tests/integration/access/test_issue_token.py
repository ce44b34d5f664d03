"""`python -m recloop.tools.issue_token`: the token it prints verifies with the stack's key and names whom it was
asked for; bad requests are refused before anything is signed."""

from __future__ import annotations

import time
from typing import Any

import pytest

from recloop.access.principal import Principal, Scope
from recloop.access.tokens import verify, verify_token
from recloop.tools.issue_token import main
from tests.support.environment import REGION
from tests.support.tokens import SAMPLE_SIGNING_KEY, create_signing_secret

KEY = SAMPLE_SIGNING_KEY.encode()


@pytest.fixture
def secret_arn(aws: dict[str, Any]) -> str:
    return create_signing_secret()


def issued(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main([*argv, "--region", REGION]) == 0
    return capsys.readouterr().out.strip()


def test_a_user_token_for_one_hour_by_default(secret_arn: str, capsys: pytest.CaptureFixture[str]) -> None:
    token = issued(capsys, "--user", "user_123", "--secret-arn", secret_arn)
    now = time.time()
    assert verify_token(token, [KEY], now=now) == Principal("user_123", Scope.USER, "user_123")
    assert abs(verify(token, [KEY], now=now)["exp"] - (now + 3600)) < 5


def test_a_service_token_with_the_secret_from_the_environment(
    secret_arn: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTH_SIGNING_SECRET_ARN", secret_arn)
    token = issued(capsys, "--service", "checkout-backend", "--ttl-hours", "2")
    now = time.time()
    assert verify_token(token, [KEY], now=now) == Principal("checkout-backend", Scope.SERVICE)
    assert abs(verify(token, [KEY], now=now)["exp"] - (now + 7200)) < 5


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--user", "not a user id"], "uid"),
        (["--service", "x", "--ttl-hours", "0"], "--ttl-hours"),
        (["--service", "x", "--ttl-hours", "9000"], "--ttl-hours"),
        (["--service", "x", "--user", "y"], "not allowed with"),
        ([], "one of the arguments"),
    ],
)
def test_bad_requests_are_refused(
    secret_arn: str, capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--secret-arn", secret_arn, "--region", REGION])
    assert exited.value.code == 2
    assert fragment in capsys.readouterr().err


def test_without_a_secret_it_says_where_to_find_one(
    aws: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AUTH_SIGNING_SECRET_ARN", raising=False)
    with pytest.raises(SystemExit):
        main(["--service", "x", "--region", REGION])
    assert "TokenSigningSecretArn" in capsys.readouterr().err
