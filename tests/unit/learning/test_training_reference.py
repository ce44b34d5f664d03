"""The drift reference a trained version carries: what it was trained on, capped, with or without categories."""

from __future__ import annotations

from collections.abc import Sequence

from recloop.core.settings import Settings
from recloop.drift.features import Source
from recloop.drift.reference import REFERENCE_FILE, ReferenceSample
from recloop.learning.training import drift_reference, train_candidate
from recloop.models.bundle import ModelKind
from recloop.models.loading import load_model
from tests.support.learning import SMALL_MF, T0, event, tastes

SETTINGS = Settings.from_env({"POPULARITY_CACHE_SECONDS": "0"})
HISTORY = tastes(40, T0, {"a": [f"a{n}" for n in range(6)], "b": [f"b{n}" for n in range(6)]})


def test_an_mf_version_carries_the_event_mix_and_still_loads() -> None:
    result = train_candidate(ModelKind.MF, HISTORY, SETTINGS, "mf-1", mf_params=SMALL_MF)

    reference = ReferenceSample.from_npz(result.bundle.files[REFERENCE_FILE])
    assert reference.version == "mf-1"
    assert reference.rows == {Source.SERVED: 0, Source.EVENTS: len(HISTORY)}
    assert reference.sample.categorical["event_type"] == {"like": len(HISTORY)}
    # No categories were given: the category mix is left out (untested), not compared with "none" everywhere.
    assert "item_category" not in reference.sample.categorical
    assert REFERENCE_FILE in result.bundle.metadata.files
    load_model(result.bundle)


def test_the_reference_is_capped_and_looks_up_only_the_items_it_keeps() -> None:
    asked: list[str] = []

    def categories_of(items: Sequence[str]) -> dict[str, set[str]]:
        asked.extend(items)
        return {item: {"Drama"} if item.startswith("a") else set() for item in items}

    events = HISTORY + [event(f"late{n}", f"c{n}", T0 + 10_000 + n, "view") for n in range(200)]
    reference = drift_reference("v", events, categories_of, max_rows=50)

    assert reference.rows == {Source.SERVED: 0, Source.EVENTS: 50}
    assert sum(reference.sample.categorical["event_type"].values()) == 50
    assert set(reference.sample.categorical["item_category"]) <= {"Drama", "none"}
    assert len(asked) == len(set(asked)) <= 50  # one read, of the kept events' items only
