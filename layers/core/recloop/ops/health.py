"""Reachability of each dependency, measured, never raised.

A failed probe is reported as "not reachable" only: the exception (a host, a URL, an ARN) goes to the log, since
the health route is public.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger

logger = Logger(child=True)

UNREACHABLE = "not reachable"


@dataclass(frozen=True)
class ComponentStatus:
    healthy: bool
    latency_ms: float
    error: str | None = None


def probe(component: str, check: Callable[[], Any]) -> ComponentStatus:
    started = time.perf_counter()
    try:
        check()
    except Exception as exc:  # a health probe reports every failure, whatever its type
        logger.warning("health probe failed", extra={"component": component, "error": repr(exc)[:500]})
        return ComponentStatus(False, _elapsed_ms(started), UNREACHABLE)
    return ComponentStatus(True, _elapsed_ms(started))


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def check_components(redis_client: Any, objects: Any, stream: Any) -> dict[str, ComponentStatus]:
    """Redis, S3 (the bucket) and Kinesis (the stream): `objects` and `stream` are adapters with a `probe()`."""
    return {
        "redis": probe("redis", redis_client.ping),
        "s3": probe("s3", objects.probe),
        "kinesis": probe("kinesis", stream.probe),
    }


def overall_status(components: dict[str, ComponentStatus]) -> str:
    """Redis down means no features and no fresh recommendations; anything else degrades service."""
    if not components["redis"].healthy:
        return "unhealthy"
    return "healthy" if all(c.healthy for c in components.values()) else "degraded"
