"""The recommendation route."""

from __future__ import annotations

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler.api_gateway import Router

from recloop.adapters.redis import REDIS_ERRORS
from recloop.container import get_container
from recloop.handlers.errors import ApiError
from recloop.handlers.http.access import require_acting_for
from recloop.handlers.http.resolver import documented
from recloop.handlers.http.schemas import RecommendedItem, RecommendIn, RecommendOut
from recloop.ops import cloudwatch
from recloop.serving.recommender import Recommendation

router = Router()
logger = Logger(child=True)


@router.post(
    "/api/v1/recommend",
    summary="Top items for a user",
    tags=["recommendations"],
    responses=documented(503, reads_body=True),
)
def post_recommend(request: RecommendIn) -> RecommendOut:
    require_acting_for(router.current_event, [("user_id", request.user_id)])
    services = get_container()
    recommender = services.recommender
    assignment = services.experiment_router.route(request.user_id)
    try:
        result = recommender.recommend(
            request.user_id,
            request.num_recommendations,
            exclude=request.exclude_item_ids,
            categories=request.categories,
            arm=assignment.arm if assignment else None,
        )
    except REDIS_ERRORS as exc:
        logger.warning("feature store unavailable; serving last known popular items", extra={"error": repr(exc)})
        fallback = recommender.degraded_recommendation(
            request.user_id, request.num_recommendations, request.exclude_item_ids
        )
        if fallback is None:
            raise ApiError(503, "feature_store_unavailable", "no recommendation could be made; retry later") from exc
        result = fallback
    cloudwatch.record_recommendation(result)
    return to_response(result)


def to_response(result: Recommendation) -> RecommendOut:
    return RecommendOut(
        recommendation_id=result.recommendation_id,
        user_id=result.user_id,
        items=[RecommendedItem(item_id=i.item_id, score=i.score, rank=i.rank) for i in result.items],
        model_version=result.model_version,
        cold_start=result.cold_start,
        degraded=result.degraded,
        experiment_id=result.experiment_id,
        variant=result.variant,
    )
