"""Operational routes: health of every dependency and service metrics aggregated across instances."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query

from recloop import __version__
from recloop.container import get_container
from recloop.core.events import EventType
from recloop.handlers.http.resolver import documented, json_response
from recloop.handlers.http.schemas import (
    ComponentHealth,
    HealthOut,
    LatencyHistoryOut,
    LatencyOut,
    MetricsHistoryOut,
    MetricsOut,
    ModelHealth,
)
from recloop.ops.health import check_components, overall_status
from recloop.ops.metrics import DEFAULT_WINDOW_MINUTES, MinuteHistory, counters, latency_summary, minute_history
from recloop.serving.champion import reported_model_status

router = Router()


@router.get(
    "/api/v1/health",
    summary="Reachability of Redis, S3 and Kinesis",
    tags=["operations"],
    # 503: unhealthy (Redis down), with the same body.
    responses=documented(public=True, bodies={200: HealthOut, 503: HealthOut}),
)
def get_health() -> Any:
    services = get_container()
    components = check_components(services.redis, *services.probes())
    status = overall_status(components)
    model = _model_health(services.redis) if components["redis"].healthy else None
    if model is not None and model.error and status == "healthy":
        status = "degraded"  # recommendations come from an older model than the champion
    body = HealthOut(
        status=status,  # type: ignore[arg-type]
        version=__version__,
        model=model,
        components={
            name: ComponentHealth(
                status="healthy" if c.healthy else "unhealthy", latency_ms=c.latency_ms, error=c.error
            )
            for name, c in components.items()
        },
    )
    return json_response(503 if status == "unhealthy" else 200, body.model_dump(exclude_none=True))


def _model_health(redis_client: Any) -> ModelHealth | None:
    raw = reported_model_status(redis_client)
    if not raw:
        return None
    champion = raw.get("champion") or None
    # The recorded reason holds exception text (S3 errors name buckets and ARNs): this route is public.
    error = f"{champion or 'the champion'} could not be loaded; the recommend function logged why"
    return ModelHealth(champion=champion, serving=raw.get("serving") or None, error=error if raw.get("error") else None)


@router.get(
    "/api/v1/metrics",
    summary="Latency percentiles, event counts, cold-start and cache rates",
    tags=["operations"],
    responses=documented(503, public=True),
)
def get_metrics(
    history: Annotated[
        bool, Query(description="also the window minute by minute: latency percentiles and events per type")
    ] = False,
) -> MetricsOut:
    redis_client = get_container().redis
    counts = counters(redis_client)
    events = {kind.value: counts.get(f"events:{kind.value}", 0) for kind in EventType}
    total_recs = counts.get("recommend:total", 0)
    hits, misses = counts.get("cache:hit", 0), counts.get("cache:miss", 0)
    return MetricsOut(
        window_minutes=DEFAULT_WINDOW_MINUTES,
        latency={
            endpoint: LatencyOut(count=s.count, p50_ms=s.p50_ms, p95_ms=s.p95_ms, p99_ms=s.p99_ms)
            for endpoint, s in latency_summary(redis_client).items()
        },
        events=events,
        events_total=sum(events.values()),
        recommendations_total=total_recs,
        cold_start_rate=round(counts.get("recommend:cold", 0) / total_recs, 4) if total_recs else 0.0,
        cache_hit_rate=round(hits / (hits + misses), 4) if hits + misses else 0.0,
        history=_history_out(minute_history(redis_client)) if history else None,
    )


def _history_out(history: MinuteHistory) -> MetricsHistoryOut:
    latency = {
        endpoint: LatencyHistoryOut(
            count=[s.count if s else 0 for s in minutes],
            p50_ms=[s.p50_ms if s else None for s in minutes],
            p95_ms=[s.p95_ms if s else None for s in minutes],
            p99_ms=[s.p99_ms if s else None for s in minutes],
        )
        for endpoint, minutes in history.latency.items()
    }
    return MetricsHistoryOut(minutes=history.minutes, latency=latency, events=history.events)
