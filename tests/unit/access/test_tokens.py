"""Client tokens: what verifies, and every way a token is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest

from recloop.access.principal import Principal, Scope
from recloop.access.tokens import LEEWAY_SECONDS, MAX_TOKEN_LENGTH, TokenError, issue_token, sign, verify, verify_token

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
NOW = 1_800_000_000.0
SERVICE = Principal("checkout-backend", Scope.SERVICE)
ALICE = Principal("alice", Scope.USER, "alice")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: Any) -> str:
    return b64(json.dumps(value).encode())


def signed(header: dict[str, Any], payload: bytes, key: bytes = KEY) -> str:
    """A token with any header and claims bytes, signed as HS256 would sign it."""
    signing_input = f"{segment(header)}.{b64(payload)}"
    return f"{signing_input}.{b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())}"


def claims(**overrides: Any) -> dict[str, Any]:
    return {"sub": "alice", "scope": "user", "uid": "alice", "iat": int(NOW), "exp": int(NOW) + 3600, **overrides}


def refusal(token: str, keys: tuple[bytes, ...] = (KEY,), now: float = NOW) -> str:
    with pytest.raises(TokenError) as caught:
        verify_token(token, keys, now=now)
    return str(caught.value)


# ---- accepted -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("principal", [SERVICE, ALICE])
def test_an_issued_token_names_its_principal(principal: Principal) -> None:
    token = issue_token(principal, KEY, now=NOW, ttl_seconds=3600)
    assert verify_token(token, [KEY], now=NOW + 60) == principal


def test_the_rfc_7515_hs256_example_verifies() -> None:
    """Appendix A.1 of RFC 7515: a token made elsewhere, with CRLFs in its JSON, verifies here."""
    key = base64.urlsafe_b64decode(
        "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow=="
    )
    token = (
        "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
        ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
        ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    )
    assert verify(token, [key], now=1_300_819_000) == {
        "iss": "joe",
        "exp": 1_300_819_380,
        "http://example.com/is_root": True,
    }
    with pytest.raises(TokenError, match="expired"):
        verify(token, [key], now=1_300_819_380 + LEEWAY_SECONDS + 1)


def test_a_token_signed_with_the_previous_key_verifies_while_that_key_is_kept() -> None:
    token = sign(claims(), OTHER_KEY)
    assert verify_token(token, [KEY, OTHER_KEY], now=NOW) == ALICE
    assert refusal(token, (KEY,)) == "the signature does not match"


def test_clock_differences_within_the_leeway_are_tolerated() -> None:
    token = sign(claims(exp=int(NOW), nbf=int(NOW) + 10), KEY)
    assert verify_token(token, [KEY], now=NOW + LEEWAY_SECONDS) == ALICE
    assert verify_token(token, [KEY], now=NOW + 10 - LEEWAY_SECONDS) == ALICE


# ---- refused --------------------------------------------------------------------------------------------------------


def test_an_expired_token_is_refused() -> None:
    token = issue_token(ALICE, KEY, now=NOW, ttl_seconds=60)
    assert refusal(token, now=NOW + 60 + LEEWAY_SECONDS + 1) == "expired"


def test_a_token_used_before_its_nbf_is_refused() -> None:
    assert refusal(sign(claims(nbf=int(NOW) + 600), KEY)) == "not valid yet (nbf)"


def test_a_token_without_exp_is_refused() -> None:
    assert refusal(sign({"sub": "svc", "scope": "service"}, KEY)) == "no exp claim"


def test_a_token_signed_with_another_key_is_refused() -> None:
    assert refusal(sign(claims(), OTHER_KEY)) == "the signature does not match"


def test_claims_changed_after_signing_are_refused() -> None:
    header, _, signature = sign(claims(), KEY).split(".")
    forged = f"{header}.{segment(claims(uid='bob', sub='bob'))}.{signature}"
    assert refusal(forged) == "the signature does not match"


@pytest.mark.parametrize("alg", ["none", "None", "HS512", "RS256", "hs256", None])
def test_any_algorithm_but_hs256_is_refused(alg: str | None) -> None:
    header = {"typ": "JWT"} if alg is None else {"alg": alg, "typ": "JWT"}
    assert refusal(f"{segment(header)}.{segment(claims())}.") == "the algorithm is not HS256"
    # Even with the signature HS256 and the right key would have made.
    assert refusal(signed(header, json.dumps(claims()).encode())) == "the algorithm is not HS256"


def test_a_critical_header_extension_is_refused() -> None:
    header = segment({"alg": "HS256", "crit": ["exp"]})
    assert refusal(f"{header}.{segment(claims())}.{b64(b'x')}") == "critical header extensions are not supported"


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"scope": "admin"}, "scope"),
        ({"scope": None}, "scope"),
        ({"scope": "user", "uid": None}, "needs the user_id it acts for"),
        ({"scope": "service", "uid": "alice"}, "names none"),
        ({"sub": ""}, "sub"),
        ({"sub": "a b"}, "sub"),
        ({"uid": "al ice"}, "uid"),
    ],
)
def test_unacceptable_claims_are_refused(changes: dict[str, Any], fragment: str) -> None:
    reason = refusal(sign(claims(**changes), KEY))
    assert reason.startswith("unacceptable claims") and fragment in reason


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "not three dot-separated segments"),
        ("abc.def", "not three dot-separated segments"),
        ("a.b.c.d", "not three dot-separated segments"),
        ("a+b.c.d", "a segment is not base64url"),
        ("ab=.cd.ef", "a segment is not base64url"),
        ("é.a.b", "a segment is not base64url"),
        (f"a.{segment(claims())}.AAAA", "the header is not base64url"),
        (f"{b64(b'not json')}.{segment(claims())}.AAAA", "the header is not JSON"),
        (f"{b64(b'\\xff\\xfe')}.{segment(claims())}.AAAA", "the header is not JSON"),
        (f"{segment(['HS256'])}.{segment(claims())}.AAAA", "the header is not a JSON object"),
        ("x" * (MAX_TOKEN_LENGTH + 1), f"longer than {MAX_TOKEN_LENGTH} characters"),
    ],
)
def test_malformed_tokens_are_refused(token: str, reason: str) -> None:
    assert refusal(token) == reason


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"[1, 2]", "the claims is not a JSON object"),
        (b"{", "the claims is not JSON"),
        (json.dumps(claims(exp="tomorrow")).encode(), "exp is not a number of seconds"),
        (json.dumps(claims(exp=True)).encode(), "exp is not a number of seconds"),
        (json.dumps(claims(exp=10**400)).encode(), "exp is not a plausible time"),
        (json.dumps(claims(exp=float("nan"))).encode(), "exp is not a plausible time"),
        (json.dumps(claims(nbf=[1])).encode(), "nbf is not a number of seconds"),
    ],
)
def test_signed_but_malformed_claims_are_refused(payload: bytes, reason: str) -> None:
    assert refusal(signed({"alg": "HS256"}, payload)) == reason


def test_short_keys_and_empty_key_sets_are_configuration_errors() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        sign(claims(), b"short")
    with pytest.raises(ValueError, match="no key"):
        verify(sign(claims(), KEY), [], now=NOW)
    with pytest.raises(ValueError, match="positive"):
        issue_token(ALICE, KEY, now=NOW, ttl_seconds=0)
