"""`make bench-online`'s whole-update section runs the product's OnlineLearner end to end, on a small catalogue."""

from __future__ import annotations

import pytest

from bench.online_update import bench_update_with_publication

pytestmark = pytest.mark.single_node("bench.online_update connects one Redis by its URL alone")


def test_the_whole_update_bench_publishes_and_times_each_update(redis_url: str) -> None:
    report = bench_update_with_publication(redis_url, catalogue=300, users=300, repeat=3)
    assert report["catalogue"] == 300
    assert report["whole_update"]["n"] == report["step_inside"]["n"] == 3
    # The step is part of the whole update (the buffer read, the registry's writes to S3 and the stats besides).
    assert 0 < report["step_inside"]["p50_ms"] <= report["whole_update"]["p50_ms"]
