"""Reachability of each dependency, measured, never raised."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ComponentStatus:
    healthy: bool
    latency_ms: float
    error: str | None = None


def probe(check: Callable[[], Any]) -> ComponentStatus:
    started = time.perf_counter()
    try:
        check()
    except Exception as exc:  # a health probe reports every failure, whatever its type
        return ComponentStatus(False, _elapsed_ms(started), f"{type(exc).__name__}: {exc}"[:300])
    return ComponentStatus(True, _elapsed_ms(started))


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def check_components(redis_client: Any, objects: Any, stream: Any) -> dict[str, ComponentStatus]:
    """Redis, S3 (the bucket) and Kinesis (the stream): `objects` and `stream` are adapters with a `probe()`."""
    return {
        "redis": probe(redis_client.ping),
        "s3": probe(objects.probe),
        "kinesis": probe(stream.probe),
    }


def overall_status(components: dict[str, ComponentStatus]) -> str:
    """Redis down means no features and no fresh recommendations; anything else degrades service."""
    if not components["redis"].healthy:
        return "unhealthy"
    return "healthy" if all(c.healthy for c in components.values()) else "degraded"
