"""A caller of the API as a verified token names it, and what it may do.

Two kinds of caller: a trusted backend service acts for any user and may operate the service (the /api/v1/mlops/*
routes, the catalogue); a user acts for one user only, the one its token names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Scope(StrEnum):
    SERVICE = "service"
    USER = "user"


@dataclass(frozen=True)
class Principal:
    """`name` identifies the caller (a token's `sub`); `user_id` is the one user a user principal acts for."""

    name: str
    scope: Scope
    user_id: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a principal needs a name")
        if self.scope is Scope.USER and not self.user_id:
            raise ValueError("a user principal needs the user_id it acts for")
        if self.scope is Scope.SERVICE and self.user_id:
            raise ValueError("a service principal acts for every user and names none")

    def may_act_for(self, user_id: str) -> bool:
        return self.scope is Scope.SERVICE or self.user_id == user_id

    @property
    def may_operate(self) -> bool:
        """Operations (models, online learning) and the catalogue are for backend services only."""
        return self.scope is Scope.SERVICE

    def as_context(self) -> dict[str, str]:
        """What the authorizer hands to the routes (API Gateway's authorizer context holds strings)."""
        return {"principal": self.name, "scope": self.scope.value, "user_id": self.user_id}

    @classmethod
    def from_context(cls, context: Mapping[str, Any]) -> Principal:
        """The principal in an authorizer context made by `as_context`; ValueError when it holds none."""
        name, scope, user_id = context.get("principal"), context.get("scope"), context.get("user_id") or ""
        if not isinstance(name, str) or not isinstance(scope, str) or not isinstance(user_id, str):
            raise ValueError("the authorizer context names no principal")
        return cls(name, Scope(scope), user_id)
