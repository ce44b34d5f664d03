"""Client tokens: compact JSON Web Tokens (RFC 7519) signed with HMAC-SHA256, made and checked with the standard
library only.

A token is accepted when its header says HS256, one of the given keys made its signature (compared in constant
time) and the time lies between `nbf` and `exp`, give or take a small leeway for clocks. The header's "alg" is only
compared with HS256, never used to pick an algorithm, so "none" and algorithm-confusion tokens are refused.

Claims: `sub` (who calls), `scope` ("service": a trusted backend, any user; "user": one user, named by `uid`),
`exp` (required), `iat` and optionally `nbf`, all times in Unix seconds.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from recloop.access.principal import Principal, Scope
from recloop.core.events import Identifier

ALGORITHM = "HS256"
# Clock difference tolerated between the token's issuer and the authorizer.
LEEWAY_SECONDS = 30.0
# A token is a header, a few short claims and a signature: anything much longer is not one of ours.
MAX_TOKEN_LENGTH = 4096
# HMAC-SHA256 keys shorter than the hash add no strength and suggest a hand-typed secret.
MIN_KEY_BYTES = 32

_BASE64URL = re.compile(r"^[A-Za-z0-9_-]*$")


class TokenError(ValueError):
    """Not a token this service honours. The message says why, for the logs; callers are only told "Unauthorized"."""


class TokenClaims(BaseModel):
    """The claims that name a principal; other registered claims (iss, aud, jti) are ignored."""

    model_config = ConfigDict(extra="ignore")

    sub: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
    scope: Scope
    uid: Identifier | None = None

    def principal(self) -> Principal:
        return Principal(self.sub, self.scope, self.uid or "")


def sign(claims: Mapping[str, Any], key: bytes) -> str:
    """A token carrying `claims`, signed with `key`."""
    _check_key(key)
    signing_input = f"{_encode_json({'alg': ALGORITHM, 'typ': 'JWT'})}.{_encode_json(claims)}"
    return f"{signing_input}.{_b64encode(_mac(key, signing_input.encode('ascii')))}"


def issue_token(principal: Principal, key: bytes, *, now: float, ttl_seconds: float) -> str:
    """A token naming `principal`, valid from `now` for `ttl_seconds`."""
    if not ttl_seconds > 0:
        raise ValueError("a token's lifetime must be positive")
    claims: dict[str, Any] = {"sub": principal.name, "scope": principal.scope.value}
    if principal.user_id:
        claims["uid"] = principal.user_id
    claims |= {"iat": int(now), "exp": int(now + ttl_seconds)}
    return sign(claims, key)


def verify(token: str, keys: Sequence[bytes], *, now: float, leeway: float = LEEWAY_SECONDS) -> dict[str, Any]:
    """The claims of `token` when one of `keys` signed it with HS256 and it is valid at `now`; TokenError otherwise."""
    if not keys:
        raise ValueError("no key to verify tokens with")
    if len(token) > MAX_TOKEN_LENGTH:
        raise TokenError(f"longer than {MAX_TOKEN_LENGTH} characters")
    segments = token.split(".")
    if len(segments) != 3:
        raise TokenError("not three dot-separated segments")
    header_segment, claims_segment, signature_segment = segments
    if not all(_BASE64URL.fullmatch(segment) for segment in segments):
        raise TokenError("a segment is not base64url")
    header = _decode_json(header_segment, "header")
    if header.get("alg") != ALGORITHM:
        raise TokenError(f"the algorithm is not {ALGORITHM}")
    if "crit" in header:
        raise TokenError("critical header extensions are not supported")
    signature = _b64decode(signature_segment, "signature")
    signing_input = f"{header_segment}.{claims_segment}".encode("ascii")
    if not any(hmac.compare_digest(signature, _mac(key, signing_input)) for key in keys):
        raise TokenError("the signature does not match")
    claims = _decode_json(claims_segment, "claims")
    expires = _numeric_date(claims, "exp")
    if expires is None:
        raise TokenError("no exp claim")
    if now > expires + leeway:
        raise TokenError("expired")
    not_before = _numeric_date(claims, "nbf")
    if not_before is not None and now + leeway < not_before:
        raise TokenError("not valid yet (nbf)")
    return claims


def verify_token(token: str, keys: Sequence[bytes], *, now: float, leeway: float = LEEWAY_SECONDS) -> Principal:
    """The principal a valid token names; TokenError when the token or its claims are not acceptable."""
    claims = verify(token, keys, now=now, leeway=leeway)
    try:
        return TokenClaims.model_validate(claims).principal()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'claims'}: {e['msg']}" for e in exc.errors())
        raise TokenError(f"unacceptable claims ({problems})") from None
    except ValueError as exc:  # a principal that cannot be (a user scope without uid, a service scope with one)
        raise TokenError(f"unacceptable claims ({exc})") from None


def _check_key(key: bytes) -> None:
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"a signing key must be at least {MIN_KEY_BYTES} bytes")


def _mac(key: bytes, signing_input: bytes) -> bytes:
    return hmac.new(key, signing_input, hashlib.sha256).digest()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _encode_json(value: Mapping[str, Any]) -> str:
    return _b64encode(json.dumps(value, separators=(",", ":"), allow_nan=False).encode("utf-8"))


def _b64decode(segment: str, part: str) -> bytes:
    if not _BASE64URL.fullmatch(segment) or len(segment) % 4 == 1:
        raise TokenError(f"the {part} is not base64url")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise TokenError(f"the {part} is not base64url") from None


def _decode_json(segment: str, part: str) -> dict[str, Any]:
    raw = _b64decode(segment, part)
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise TokenError(f"the {part} is not JSON") from None
    if not isinstance(value, dict):
        raise TokenError(f"the {part} is not a JSON object")
    return value


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenError(f"{name} is not a number of seconds")
    try:
        seconds = float(value)
    except OverflowError:  # an integer too large for a float
        raise TokenError(f"{name} is not a plausible time") from None
    if not math.isfinite(seconds):
        raise TokenError(f"{name} is not a plausible time")
    return seconds
