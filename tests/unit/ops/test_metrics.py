import pytest

from recloop.core.latency_histogram import bucket_of, bucket_upper_ms, percentile_from_histogram


@pytest.mark.parametrize("latency", [0.01, 0.3, 1.0, 2.5, 17.0, 250.0, 9000.0])
def test_buckets_bound_the_latency_within_ten_percent(latency: float) -> None:
    upper = bucket_upper_ms(bucket_of(latency))
    assert upper >= latency or latency <= 0.05
    assert upper <= max(latency, 0.05) * 1.1 + 1e-9


def test_percentiles_from_merged_histogram() -> None:
    histogram: dict[int, int] = {}
    for latency in [1.0] * 90 + [10.0] * 9 + [100.0]:
        bucket = bucket_of(latency)
        histogram[bucket] = histogram.get(bucket, 0) + 1
    assert percentile_from_histogram(histogram, 0.5) == pytest.approx(1.0, rel=0.1)
    assert percentile_from_histogram(histogram, 0.95) == pytest.approx(10.0, rel=0.1)
    assert percentile_from_histogram(histogram, 0.999) == pytest.approx(100.0, rel=0.1)
    assert percentile_from_histogram({}, 0.99) == 0.0
