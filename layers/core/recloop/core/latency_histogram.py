"""Latency histograms with log-spaced buckets (10% wide): percentiles over any window or any number of Lambda
instances are a merge of small hashes of bucket -> count."""

from __future__ import annotations

import math

BUCKET_BASE_MS = 0.05
BUCKET_GROWTH = 1.1


def bucket_of(latency_ms: float) -> int:
    if latency_ms <= BUCKET_BASE_MS:
        return 0
    return 1 + int(math.log(latency_ms / BUCKET_BASE_MS, BUCKET_GROWTH))


def bucket_upper_ms(bucket: int) -> float:
    return BUCKET_BASE_MS * BUCKET_GROWTH**bucket


def percentile_from_histogram(histogram: dict[int, int], quantile: float) -> float:
    total = sum(histogram.values())
    if not total:
        return 0.0
    threshold = quantile * total
    running = 0
    for bucket in sorted(histogram):
        running += histogram[bucket]
        if running >= threshold:
            return round(bucket_upper_ms(bucket), 3)
    return round(bucket_upper_ms(max(histogram)), 3)
