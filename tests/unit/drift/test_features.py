"""The monitored features: the served layout is the ranker's feature row plus its score, names are unique, and the
category label counts each item once."""

from __future__ import annotations

import pytest

from recloop.drift.features import (
    MONITORED_FEATURES,
    NO_CATEGORY,
    PREDICTION_SCORE,
    FeatureKind,
    FeatureSet,
    MonitoredFeature,
    Source,
    category_label,
    event_row,
)
from recloop.models.ranker import FEATURE_NAMES


def test_the_served_layout_is_the_ranker_row_then_the_score() -> None:
    assert MONITORED_FEATURES.columns(Source.SERVED) == (*FEATURE_NAMES, PREDICTION_SCORE)
    assert MONITORED_FEATURES.columns(Source.EVENTS) == ("event_type", "item_category")


def test_flags_are_categorical_and_the_rest_of_the_ranker_row_numeric() -> None:
    kinds = {feature.name: feature.kind for feature in MONITORED_FEATURES}
    flags = {"mf_known", "from_cooc", "from_mf"}
    assert {name for name, kind in kinds.items() if kind is FeatureKind.CATEGORICAL} == {
        *flags,
        "event_type",
        "item_category",
    }
    assert all(feature.effect_floor > 0 for feature in MONITORED_FEATURES)


def test_only_the_features_that_trend_by_construction_are_left_untested() -> None:
    """Ages grow with wall-clock time, lifetime counts with the lineage's own traffic: tested, they would always
    drift. Their decayed counterparts are tested."""
    untested = {feature.name: feature.untested_because for feature in MONITORED_FEATURES if not feature.tested}
    assert set(untested) == {"item_age_days", "item_idle_days", "item_events_log", "user_events_log"}
    assert all(untested.values())  # each says why


def test_names_must_be_unique() -> None:
    feature = MonitoredFeature(name="x", kind=FeatureKind.NUMERIC, source=Source.SERVED, effect_floor=0.1)
    with pytest.raises(ValueError, match="unique"):
        FeatureSet((feature, feature))
    with pytest.raises(ValueError):
        FeatureSet(())


def test_an_item_is_one_label_whatever_the_order_of_its_categories() -> None:
    assert category_label(["drama", "action", "drama"]) == "action|drama"
    assert category_label(set()) == NO_CATEGORY
    assert event_row("view", {"comedy"}) == ("view", "comedy")
