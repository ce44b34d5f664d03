"""Rows of the two streams into a feature sample: served rows as float32, flags labelled by their number, values
that are not finite numbers left out, event rows of another width skipped."""

from __future__ import annotations

import numpy as np
import pytest

from recloop.drift.features import FeatureKind, FeatureSet, MonitoredFeature, Source
from recloop.drift.samples import sample_from_rows

FEATURES = FeatureSet(
    (
        MonitoredFeature(name="score", kind=FeatureKind.NUMERIC, source=Source.SERVED, effect_floor=0.07),
        MonitoredFeature(name="flag", kind=FeatureKind.CATEGORICAL, source=Source.SERVED, effect_floor=0.06),
        MonitoredFeature(name="event_type", kind=FeatureKind.CATEGORICAL, source=Source.EVENTS, effect_floor=0.06),
        MonitoredFeature(name="dwell", kind=FeatureKind.NUMERIC, source=Source.EVENTS, effect_floor=0.07),
    )
)


def test_each_feature_takes_its_column_of_its_stream() -> None:
    served = [[0.1, 1.0], [np.nan, 0.0], [0.3, 1.0], [np.inf, np.nan]]
    events = [("view", "2.5"), ("click", "oops"), ("view", "1"), ("too", "many", "values")]

    sample = sample_from_rows(FEATURES, served, events)

    assert sample.numeric["score"].tolist() == pytest.approx([0.1, 0.3])  # float32 values, as served
    assert sample.numeric["score"].dtype == np.float64
    assert sample.categorical["flag"] == {"0": 1, "1": 2}
    assert sample.categorical["event_type"] == {"view": 2, "click": 1}
    assert sample.numeric["dwell"].tolist() == [2.5, 1.0]
    assert sample.size("score") == 2 and sample.size("event_type") == 3 and sample.size("unknown") == 0


def test_served_rows_of_the_wrong_width_are_refused() -> None:
    with pytest.raises(ValueError, match="2 columns"):
        sample_from_rows(FEATURES, [[1.0, 2.0, 3.0]], [])
    empty = sample_from_rows(FEATURES, [], [])
    assert empty.size("score") == 0 and empty.categorical["flag"] == {}
