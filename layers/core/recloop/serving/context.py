"""What a request carries through the recommender, and the interfaces candidate sources, scorers and trained
models implement."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from recloop.features.store import UserProfile

POPULARITY_MODEL = "popularity"

TRENDING_MODEL = "trending"

COOCCURRENCE_MODEL = "cooccurrence"


@dataclass
class UserContext:
    """Everything a scorer may use about the request and the user."""

    profile: UserProfile
    now: float
    exclude: set[str]
    categories: frozenset[str] | None = None
    # Request-scoped data that sources fetch and scorers reuse (one Redis read, not two).
    neighbours: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    popularity: dict[str, float] = field(default_factory=dict)
    max_popularity: float = 0.0
    # Per-request values of trained models (e.g. the user's MF vector).
    extras: dict[str, Any] = field(default_factory=dict)


class CandidateSource(Protocol):
    def candidates(self, ctx: UserContext, limit: int) -> list[str]: ...


class Scorer(Protocol):
    model_version: str

    def score(self, ctx: UserContext, items: Sequence[str]) -> list[float]: ...


class ServedModel(Protocol):
    """A trained model version as the recommender uses it (see recloop.serving)."""

    version: str

    def prepare(self, ctx: UserContext) -> bool:
        """Per-request state; False when the model cannot serve this user (then the built-in path does)."""
        ...

    def sources(self) -> list[CandidateSource]: ...

    def scorer(self) -> Scorer: ...
