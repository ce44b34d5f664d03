"""Principals: who may act for which user, and the authorizer context that carries them to the routes."""

from __future__ import annotations

from typing import Any

import pytest

from recloop.access.principal import Principal, Scope

SERVICE = Principal("checkout-backend", Scope.SERVICE)
ALICE = Principal("alice-app", Scope.USER, "alice")


def test_a_service_acts_for_anyone_and_operates() -> None:
    assert SERVICE.may_act_for("alice") and SERVICE.may_act_for("bob")
    assert SERVICE.may_operate


def test_a_user_acts_for_itself_only_and_does_not_operate() -> None:
    assert ALICE.may_act_for("alice")
    assert not ALICE.may_act_for("bob") and not ALICE.may_act_for("Alice") and not ALICE.may_act_for("")
    assert not ALICE.may_operate


@pytest.mark.parametrize("principal", [SERVICE, ALICE])
def test_the_authorizer_context_carries_the_principal(principal: Principal) -> None:
    context = principal.as_context()
    assert all(isinstance(value, str) for value in context.values())
    # API Gateway adds its own keys beside the authorizer's.
    assert Principal.from_context({**context, "principalId": principal.name, "integrationLatency": 3}) == principal


@pytest.mark.parametrize(
    "context",
    [
        {},
        {"principal": "x"},
        {"principal": "x", "scope": "admin"},
        {"principal": "x", "scope": "user"},
        {"principal": "x", "scope": "service", "user_id": "alice"},
        {"principal": "", "scope": "service"},
        {"principal": 7, "scope": "service"},
    ],
)
def test_a_context_without_a_valid_principal_is_refused(context: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Principal.from_context(context)
