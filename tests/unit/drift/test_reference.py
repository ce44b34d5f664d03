"""Reference samples: built from rows with each stream capped by a uniform subsample, one served row per training
query, and stored as npz or JSON without loss."""

from __future__ import annotations

import numpy as np
import pytest

from recloop.core.events import Interaction
from recloop.drift.features import MONITORED_FEATURES, Source
from recloop.drift.reference import (
    REFERENCE_FILE,
    ReferenceSample,
    build_reference,
    event_rows,
    one_row_per_query,
    with_reference,
)
from recloop.models.bundle import CorruptModelError, ModelBundle, ModelKind, ModelMetadata, sha256

WIDTH = len(MONITORED_FEATURES.columns(Source.SERVED))


def served_rows(rows: int, seed: int = 0) -> np.ndarray:
    matrix = np.random.default_rng(seed).lognormal(size=(rows, WIDTH)).astype(np.float32)
    matrix[:, 0] = np.arange(rows)  # mf_score: the row number, to see which rows were kept
    for flag in ("mf_known", "from_cooc", "from_mf"):
        matrix[:, MONITORED_FEATURES.columns(Source.SERVED).index(flag)] = np.arange(rows) % 2
    return matrix


def test_each_stream_is_capped_by_a_uniform_subsample() -> None:
    events = [("view", f"c{n % 7}") for n in range(12_000)]
    reference = build_reference("v1", served_rows(20_000), events, max_rows=5_000, seed=3)

    kept = reference.sample.numeric["mf_score"]
    assert reference.rows == {Source.SERVED: 5_000, Source.EVENTS: 5_000}
    assert len(np.unique(kept)) == 5_000  # without replacement
    # Uniform over the input: each quarter of the rows gives about a quarter (binomial sd ~31 rows).
    quarters = np.bincount((kept // 5_000).astype(int), minlength=4)
    assert np.all(np.abs(quarters - 1_250) < 150)
    assert sum(reference.sample.categorical["event_type"].values()) == 5_000


def test_a_small_input_is_kept_whole() -> None:
    reference = build_reference("v1", served_rows(300), [("click", "none")] * 40)
    assert reference.rows == {Source.SERVED: 300, Source.EVENTS: 40}
    assert reference.sample.categorical["mf_known"] == {"0": 150, "1": 150}


def test_one_row_per_query_drawn_within_the_query() -> None:
    groups = [3, 1, 5, 2]
    rows = np.repeat(np.arange(len(groups)), groups)[:, None] * np.ones((1, WIDTH - 1))  # row value = its query
    scores = np.arange(sum(groups), dtype=np.float64)

    chosen = one_row_per_query(rows, scores, groups, seed=1)

    assert chosen.shape == (len(groups), WIDTH)
    assert chosen[:, 0].tolist() == [0, 1, 2, 3]  # one row of each query, in order
    starts = np.r_[0, np.cumsum(groups)[:-1]]
    assert np.all((chosen[:, -1] >= starts) & (chosen[:, -1] < starts + groups))  # its own score
    with pytest.raises(ValueError):
        one_row_per_query(rows, scores, [3, 1], seed=1)


def test_event_rows_carry_the_items_categories() -> None:
    def event(item: str, kind: str) -> Interaction:
        return Interaction(event_id=f"e-{item}", user_id="u", item_id=item, event_type=kind, timestamp=1, received_at=1)

    looked_up: list[list[str]] = []

    def categories_of(items):
        looked_up.append(list(items))
        return {"i1": {"drama", "action"}, "i2": set()}

    rows = event_rows([event("i1", "like"), event("i2", "view"), event("i1", "view")], categories_of)
    assert rows == [("like", "action|drama"), ("view", "none"), ("view", "action|drama")]
    assert looked_up == [["i1", "i2"]]  # one read for the distinct items


def test_npz_and_json_round_trips_are_exact() -> None:
    reference = build_reference("v7", served_rows(800, seed=5), [("view", "a"), ("like", "b")] * 60)

    for restored in (ReferenceSample.from_npz(reference.to_npz()), ReferenceSample.from_json(reference.to_json())):
        assert (restored.version, restored.created_at, restored.rows) == ("v7", reference.created_at, reference.rows)
        assert restored.sample.categorical == reference.sample.categorical
        assert restored.sample.numeric.keys() == reference.sample.numeric.keys()
        for name, values in reference.sample.numeric.items():
            assert np.array_equal(restored.sample.numeric[name], values)


def test_an_unreadable_npz_is_a_corrupt_model_file() -> None:
    with pytest.raises(CorruptModelError):
        ReferenceSample.from_npz(b"not an npz")


def test_the_reference_joins_the_bundle_as_a_checksummed_file() -> None:
    bundle = ModelBundle(ModelMetadata(version="v1", kind=ModelKind.POPULARITY), {"other.bin": b"x"})
    reference = build_reference("v1", served_rows(200), [])

    joined = with_reference(bundle, reference)

    assert set(joined.files) == {"other.bin", REFERENCE_FILE}
    assert joined.metadata.files[REFERENCE_FILE] == sha256(joined.files[REFERENCE_FILE])
    assert ModelBundle.from_files(joined.serialised()).files[REFERENCE_FILE] == joined.files[REFERENCE_FILE]
    assert REFERENCE_FILE not in bundle.metadata.files  # the original bundle is unchanged
