"""The keys of client tokens, kept in one Secrets Manager secret (its SecretString is the bare key).

New tokens are signed with the secret's current value. Tokens verify against the current value and, after a
rotation, the previous one (the AWSPREVIOUS version), so tokens already issued keep working until the rotation after
next and services can fetch new ones meanwhile. Both are kept for a few minutes per instance.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from aws_lambda_powertools import Logger

from recloop.access.tokens import MIN_KEY_BYTES
from recloop.adapters.aws import aws_errors, error_code
from recloop.adapters.secrets import Secret, SecretValueError

logger = Logger(child=True)

CURRENT, PREVIOUS = "AWSCURRENT", "AWSPREVIOUS"
# How long keys read from the secret are used before it is read again: a rotation reaches every instance within it.
CACHE_SECONDS = 300.0
# After a failed read, how long the keys held are used before the secret is read again.
RETRY_SECONDS = 10.0


class SigningKeyError(RuntimeError):
    """The secret could not be read or holds no usable key: a fault of the deployment, not of the caller."""


class SigningKeys:
    def __init__(
        self,
        secret: Secret,
        *,
        cache_seconds: float = CACHE_SECONDS,
        retry_seconds: float = RETRY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secret = secret
        self._cache_seconds = cache_seconds
        self._retry_seconds = retry_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: tuple[bytes, ...] = ()
        self._next_read = -math.inf

    def signing_key(self) -> bytes:
        return self._current()[0]

    def verification_keys(self) -> tuple[bytes, ...]:
        """The current key, then the previous one when there is a usable one."""
        return self._current()

    def _current(self) -> tuple[bytes, ...]:
        with self._lock:
            if self._clock() >= self._next_read:
                self._refresh()
            return self._keys

    def _refresh(self) -> None:
        try:
            current = _key(self._secret.read(CURRENT))
            previous = self._previous()
        except (*aws_errors(), SecretValueError, SigningKeyError) as exc:
            # Our own words or an AWS error code: never the secret's value.
            own = isinstance(exc, SigningKeyError | SecretValueError)
            reason = str(exc) if own else error_code(exc) or type(exc).__name__
            if not self._keys:
                raise SigningKeyError(f"the token signing key could not be read ({reason})") from exc
            # Keep verifying with the keys held: a Secrets Manager hiccup must not lock every client out.
            logger.warning("token signing key not refreshed", extra={"reason": reason})
            self._next_read = self._clock() + self._retry_seconds
            return
        self._keys = (current,) if previous is None or previous == current else (current, previous)
        self._next_read = self._clock() + self._cache_seconds

    def _previous(self) -> bytes | None:
        """The value before the last rotation; None before any rotation (or when it is not a usable key)."""
        try:
            return _key(self._secret.read(PREVIOUS))
        except aws_errors() as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return None
            raise
        except (SecretValueError, SigningKeyError) as exc:
            logger.warning("previous token signing key ignored", extra={"reason": str(exc)})
            return None


def _key(secret_string: str) -> bytes:
    key = secret_string.encode("utf-8")
    if len(key) < MIN_KEY_BYTES:
        raise SigningKeyError(f"the signing key is shorter than {MIN_KEY_BYTES} bytes")
    return key
