"""Model registry routes: list versions, read one, promote one to champion, roll the champion back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Query
from pydantic import BaseModel, ConfigDict, Field

from recloop.adapters.aws import aws_errors
from recloop.container import get_container
from recloop.handlers.errors import ApiError
from recloop.handlers.http.resolver import documented
from recloop.models.bundle import ModelMetadata
from recloop.registry.champion import ChampionPointer
from recloop.registry.model_registry import ModelRegistry

router = Router()
logger = Logger(child=True)

TAGS = ["models"]
MAX_REASON_LENGTH = 500
MAX_HISTORY = 50


class ModelVersionOut(ModelMetadata):
    is_champion: bool = False


class ChampionChangeRecord(ChampionPointer):
    action: Literal["promote", "rollback"]


class ModelsOut(BaseModel):
    champion: ChampionPointer | None
    count: int
    models: list[ModelVersionOut] = Field(description="registered versions, newest first")
    champion_history: list[ChampionChangeRecord] | None = Field(
        None, description="with ?history=N: the newest N champion changes (promotions and rollbacks), newest first"
    )


class ChangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, min_length=1, max_length=MAX_REASON_LENGTH)


class ChampionChangeOut(BaseModel):
    status: Literal["promoted", "already_champion", "rolled_back"]
    champion: ChampionPointer


def get_registry() -> ModelRegistry:
    return get_container().registry


@contextmanager
def registry_errors() -> Iterator[None]:
    """S3 unreachable while reading or changing the registry: 503 (the registry's own refusals are domain errors,
    answered by the resolver)."""
    try:
        yield
    except aws_errors() as exc:
        logger.exception("model registry unavailable")
        raise ApiError(503, "registry_unavailable", "the model registry did not answer; retry later") from exc


def _reason(body: ChangeIn | None, default: str) -> str:
    return body.reason if body is not None and body.reason else default


@router.get(
    "/api/v1/mlops/models",
    summary="Registered model versions and the champion",
    tags=TAGS,
    responses=documented(503),
)
def list_models(
    history: Annotated[
        int, Query(ge=0, le=MAX_HISTORY, description="also the newest this many champion changes (one read each)")
    ] = 0,
) -> ModelsOut:
    registry = get_registry()
    with registry_errors():
        champion = registry.champion(use_cache=False)
        versions = registry.list_versions()
        changes: list[dict[str, Any]] | None = registry.history(history) if history else None
    current = champion.version if champion else None
    models = [ModelVersionOut(**m.model_dump(), is_champion=m.version == current) for m in versions]
    return ModelsOut(
        champion=champion,
        count=len(models),
        models=models,
        champion_history=None if changes is None else [ChampionChangeRecord.model_validate(c) for c in changes],
    )


@router.get(
    "/api/v1/mlops/models/<version>",
    summary="Metadata of one model version",
    tags=TAGS,
    responses=documented(404, 503),
)
def get_model(version: str) -> ModelVersionOut:
    registry = get_registry()
    with registry_errors():
        metadata = registry.get(version)
        champion = registry.champion(use_cache=False)
    return ModelVersionOut(**metadata.model_dump(), is_champion=champion is not None and champion.version == version)


@router.post(
    "/api/v1/mlops/models/rollback",
    summary="Point the champion back at the previous version",
    tags=TAGS,
    responses=documented(404, 409, 503, reads_body=True),
)
def rollback_model(body: Annotated[ChangeIn | None, Body()] = None) -> ChampionChangeOut:
    registry = get_registry()
    with registry_errors():
        pointer = registry.rollback(_reason(body, "manual rollback via API"))
    return ChampionChangeOut(status="rolled_back", champion=pointer)


@router.post(
    "/api/v1/mlops/models/<version>/promote",
    summary="Make a version the champion (refused if it cannot load)",
    tags=TAGS,
    responses=documented(404, 409, 503, reads_body=True),
)
def promote_model(version: str, body: Annotated[ChangeIn | None, Body()] = None) -> ChampionChangeOut:
    registry = get_registry()
    with registry_errors():
        before = registry.champion(use_cache=False)
        pointer = registry.promote(version, _reason(body, "manual promotion via API"))
    unchanged = before is not None and before.version == version
    return ChampionChangeOut(status="already_champion" if unchanged else "promoted", champion=pointer)
