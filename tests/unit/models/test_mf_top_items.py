"""MF's best items over the whole catalogue: the exact top of a full sort, whatever is excluded or appended."""

from __future__ import annotations

import numpy as np

from recloop.models.mf import MatrixFactorisation


def model(items: int, factors: int = 6, seed: int = 3) -> MatrixFactorisation:
    rng = np.random.default_rng(seed)
    return MatrixFactorisation(
        [f"i{n}" for n in range(items)],
        rng.normal(size=(items, factors)).astype(np.float32),
        ["u0"],
        rng.normal(size=(1, factors)).astype(np.float32),
        0.1,
        20.0,
    )


def full_sort(mf: MatrixFactorisation, vector: np.ndarray, count: int, exclude: set[str]) -> list[tuple[str, float]]:
    scores = mf.item_factors @ vector
    ranked = sorted(range(len(scores)), key=lambda n: -scores[n])
    return [(mf.item_ids[n], float(scores[n])) for n in ranked if mf.item_ids[n] not in exclude][:count]


def test_top_items_are_the_best_of_a_full_sort_without_the_excluded() -> None:
    mf = model(500)
    rng = np.random.default_rng(4)
    for _ in range(20):
        vector = rng.normal(size=6).astype(np.float32)
        best = [item for item, _ in full_sort(mf, vector, 30, set())]
        exclude = {*best[:7], *rng.choice(mf.item_ids, 40).tolist(), "not-in-the-model"}
        assert mf.top_items(vector, 30, exclude) == full_sort(mf, vector, 30, exclude)


def test_top_items_follow_the_catalogue_as_items_are_appended_and_removed() -> None:
    mf = model(50)
    vector = np.ones(6, dtype=np.float32)
    assert mf.top_items(vector, 10) == full_sort(mf, vector, 10, set())
    mf.append_items(["star"], np.full((1, 6), 9.0, dtype=np.float32))
    assert mf.top_items(vector, 3)[0] == ("star", 54.0)
    mf.truncate_items(50)
    assert "star" not in {item for item, _ in mf.top_items(vector, 50)}


def test_top_items_never_return_more_than_the_catalogue_holds() -> None:
    mf = model(12)
    vector = np.ones(6, dtype=np.float32)
    assert mf.top_items(vector, 100, {"i0", "i1"}) == full_sort(mf, vector, 100, {"i0", "i1"})
    assert len(mf.top_items(vector, 100, {"i0", "i1"})) == 10
    assert mf.top_items(vector, 5, set(mf.item_ids)) == []


def test_equal_scores_at_the_cut_go_to_the_earlier_items() -> None:
    mf = model(200, seed=5)
    mf.item_factors[::3] = mf.item_factors[0]  # a third of the catalogue scores the same, wherever the cut falls
    rng = np.random.default_rng(6)
    for count in (1, 10, 40, 67, 100):
        vector = rng.normal(size=6).astype(np.float32)
        assert mf.top_items(vector, count, {"i3"}) == full_sort(mf, vector, count, {"i3"})
