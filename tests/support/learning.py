"""Interaction histories with a known structure, a small MF trained on them, and a champion made of it."""

from __future__ import annotations

from recloop.core.events import Interaction
from recloop.models.bundle import ModelKind, ModelMetadata
from recloop.models.mf import MatrixFactorisation, MFHyperparameters, train_mf
from recloop.registry.model_registry import ModelRegistry

T0 = 1_700_000_000.0

SMALL_MF = MFHyperparameters(factors=8, iterations=6)


def event(user: str, item: str, t: float, kind: str = "like") -> Interaction:
    return Interaction(
        event_id=f"{user}-{item}-{t}", user_id=user, item_id=item, event_type=kind, timestamp=t, received_at=t
    )


def tastes(users: int, t0: float, items: dict[str, list[str]]) -> list[Interaction]:
    """User n likes every item of group `sorted(items)[n % groups]`, in time order."""
    groups = sorted(items)
    out = []
    for u in range(users):
        for n, item in enumerate(items[groups[u % len(groups)]]):
            out.append(event(f"user{u}", item, t0 + u * 10 + n))
    return sorted(out, key=lambda e: e.timestamp)


def trained() -> tuple[MatrixFactorisation, list[Interaction]]:
    history = tastes(40, T0, {"a": [f"a{n}" for n in range(6)], "b": [f"b{n}" for n in range(6)]})
    return train_mf(history, SMALL_MF), history


def stream_with_new_item(users: int = 40, new_item: str = "a-new", t0: float = T0 + 100_000) -> list[Interaction]:
    """The 'a' users keep liking a-items and now also like a new item; 'b' users stay with b."""
    out = []
    for u in range(0, users, 2):
        out.append(event(f"user{u}", new_item, t0 + u))
        out.append(event(f"user{u}", "a0", t0 + 1 + u, "purchase"))
    for u in range(1, users, 2):
        out.append(event(f"user{u}", "b0", t0 + u, "purchase"))
    return sorted(out, key=lambda e: e.timestamp)


def champion(registry: ModelRegistry, version: str = "mf-online-test-0") -> MatrixFactorisation:
    mf, history = trained()
    metadata = ModelMetadata(version=version, kind=ModelKind.MF)
    metadata.data_window.end = history[-1].timestamp
    registry.register(mf.to_bundle(metadata))
    registry.promote(version, reason="test champion")
    return mf
