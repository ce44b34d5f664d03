"""Redis AUTH credentials from a Secrets Manager secret, asked for by every new connection.

redis-py calls `get_credentials()` whenever it opens a connection, never for one already authenticated. The secret
is kept for a few minutes, so a burst of new connections reads it once; when the server refuses the kept value (the
token was rotated), the next attempt reads the secret again at once, so a rotation needs no cold start.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from aws_lambda_powertools import Logger
from redis.credentials import CredentialProvider

from recloop.adapters.aws import aws_errors, error_code
from recloop.adapters.secrets import Secret
from recloop.core.settings import Settings

logger = Logger(child=True)

# How long a value read from the secret is used for new connections before it is read again.
CACHE_SECONDS = 300.0
# After a failed read, or a re-read that the server refused too, how long before the secret is read again: a wrong
# or unreadable secret costs one read per interval, not one per connection attempt.
RETRY_SECONDS = 5.0


class CredentialsUnavailableError(redis.ConnectionError):
    """The secret could not be read: to callers this is Redis being unreachable (the message names neither the
    secret nor its value)."""

    def __init__(self) -> None:
        super().__init__("the Redis credentials could not be read")


@dataclass(frozen=True)
class RedisCredentials:
    password: str
    username: str = ""  # an ACL user; empty: the default user (requirepass, ElastiCache AUTH token)

    @property
    def auth_args(self) -> tuple[str] | tuple[str, str]:
        return (self.username, self.password) if self.username else (self.password,)


def parse_credentials(secret_string: str) -> RedisCredentials:
    """A bare AUTH token, or a JSON object with "password" (or "token") and, for an ACL user, "username".

    A value that does not parse as a JSON object is a bare token (tokens may start with "{"). Raises ValueError,
    without quoting the value, when nothing usable is there.
    """
    text = secret_string.rstrip("\r\n")
    document = _json_object(text)
    if document is None:
        if not text:
            raise ValueError("the secret is empty")
        return RedisCredentials(password=text)
    password = document.get("password", document.get("token"))
    username = document.get("username", "")
    if not isinstance(password, str) or not password:
        raise ValueError('the secret\'s JSON object has no "password" or "token" text')
    if not isinstance(username, str):
        raise ValueError('the secret\'s "username" is not text')
    return RedisCredentials(password=password, username=username)


def _json_object(text: str) -> dict | None:
    if not text.startswith("{"):
        return None
    try:
        document = json.loads(text)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


class SecretCredentialProvider(CredentialProvider):
    """Credentials for each new Redis connection, from `read_secret` (a secret's current SecretString)."""

    def __init__(
        self,
        read_secret: Callable[[], str],
        *,
        cache_seconds: float = CACHE_SECONDS,
        retry_seconds: float = RETRY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read_secret = read_secret
        self._cache_seconds = cache_seconds
        self._retry_seconds = retry_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._credentials: RedisCredentials | None = None
        self._read_at = -math.inf
        self._failed_at = -math.inf
        self._refused = False  # the server refused the credentials held now
        self._read_after_refusal = False  # the credentials held now were read because earlier ones were refused

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        with self._lock:
            if self._due(self._clock()):
                self._refresh()
            if self._credentials is None:
                raise CredentialsUnavailableError()
            return self._credentials.auth_args

    def refused(self) -> bool:
        """The server refused the credentials last handed out. True when the next `get_credentials()` reads the
        secret again, so that one more attempt is worth making."""
        with self._lock:
            self._refused = True
            return self._due(self._clock())

    def _due(self, now: float) -> bool:
        if now - self._failed_at < self._retry_seconds:
            return False
        if self._credentials is None or now - self._read_at >= self._cache_seconds:
            return True
        return self._refused and (not self._read_after_refusal or now - self._read_at >= self._retry_seconds)

    def _refresh(self) -> None:
        try:
            credentials = parse_credentials(self._read_secret())
        except (*aws_errors(), ValueError) as exc:
            self._failed_at = self._clock()
            # An AWS error code, an exception type or parse_credentials' own words: never the secret's ARN or value.
            reason = error_code(exc) or (str(exc) if isinstance(exc, ValueError) else type(exc).__name__)
            logger.warning("Redis credentials not read from the secret", extra={"reason": reason})
            if self._refused:
                self._credentials = None  # refused and not replaced: nothing worth sending
            return
        self._read_after_refusal = self._refused
        self._credentials, self._read_at, self._refused = credentials, self._clock(), False


def secret_credentials(settings: Settings) -> SecretCredentialProvider | None:
    """The provider for REDIS_AUTH_SECRET_ARN, or None when Redis takes no AUTH."""
    if not settings.redis_auth_secret_arn:
        return None
    return SecretCredentialProvider(Secret(settings.redis_auth_secret_arn, settings.aws_region).read)
