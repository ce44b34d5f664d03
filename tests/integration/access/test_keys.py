"""The token keys read from their secret (moto): signing with the current value, verifying with the current and
the previous one, and what a rotation or an unreadable secret does."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from recloop.access.keys import SigningKeyError, SigningKeys
from recloop.adapters.secrets import Secret
from tests.support.environment import REGION
from tests.support.tokens import SAMPLE_SIGNING_KEY, create_signing_secret, rotate_signing_secret

NEW_KEY = "the-key-after-the-rotation-0123456789abcdef"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def secret_arn(aws: dict[str, Any]) -> str:
    return create_signing_secret()


def keys_of(secret_id: str, clock: Clock | None = None) -> SigningKeys:
    return SigningKeys(Secret(secret_id, REGION), clock=clock or Clock())


def test_before_any_rotation_there_is_one_key(secret_arn: str) -> None:
    keys = keys_of(secret_arn)
    assert keys.signing_key() == SAMPLE_SIGNING_KEY.encode()
    assert keys.verification_keys() == (SAMPLE_SIGNING_KEY.encode(),)


def test_after_a_rotation_new_tokens_use_the_new_key_and_old_ones_still_verify(secret_arn: str) -> None:
    clock = Clock()
    keys = keys_of(secret_arn, clock)
    assert keys.signing_key() == SAMPLE_SIGNING_KEY.encode()
    rotate_signing_secret(secret_arn, NEW_KEY)

    assert keys.signing_key() == SAMPLE_SIGNING_KEY.encode()  # kept for a few minutes per instance
    clock.now += 301
    assert keys.signing_key() == NEW_KEY.encode()
    assert keys.verification_keys() == (NEW_KEY.encode(), SAMPLE_SIGNING_KEY.encode())


def test_a_second_rotation_retires_the_first_key(secret_arn: str) -> None:
    rotate_signing_secret(secret_arn, NEW_KEY)
    rotate_signing_secret(secret_arn, "and-another-key-after-that-0123456789abcdef")
    assert SAMPLE_SIGNING_KEY.encode() not in keys_of(secret_arn).verification_keys()


def test_an_unreadable_secret_fails_until_read_then_keeps_the_keys_held(secret_arn: str) -> None:
    with pytest.raises(SigningKeyError, match="ResourceNotFoundException"):
        keys_of(f"{secret_arn}-missing").verification_keys()

    clock = Clock()
    keys = keys_of(secret_arn, clock)
    held = keys.verification_keys()
    boto3.client("secretsmanager", region_name=REGION).delete_secret(
        SecretId=secret_arn, ForceDeleteWithoutRecovery=True
    )
    clock.now += 301
    assert keys.verification_keys() == held  # a Secrets Manager outage must not lock every client out


def test_a_key_too_short_to_be_safe_is_refused(aws: dict[str, Any]) -> None:
    with pytest.raises(SigningKeyError, match="shorter than 32 bytes"):
        keys_of(create_signing_secret("hunter2")).signing_key()
