"""Registry bundles that need no numeric code (a fake `popularity` loader), and the pointer as S3 holds it."""

from __future__ import annotations

import json
from typing import Any

from recloop.models.bundle import ModelBundle, ModelKind, ModelMetadata
from recloop.registry.champion import POINTER_KEY, ChampionPointer
from tests.support.environment import TEST_BUCKET


def make_bundle(
    version: str,
    kind: ModelKind = ModelKind.POPULARITY,
    created_at: str = "2026-11-27T12:00:00+00:00",
    items: list[str] | None = None,
    broken: bool = False,
    **metadata: Any,
) -> ModelBundle:
    table: dict[str, Any] = {"items": items or ["a", "b", "c"]}
    if broken:
        table["broken"] = True
    files = {
        "items.json": json.dumps(table).encode(),
        "vectors/items.bin": bytes(range(64)),
    }
    return ModelBundle(ModelMetadata(version=version, kind=kind, created_at=created_at, **metadata), files)


def fake_popularity_loader(bundle: ModelBundle) -> list[str]:
    data = json.loads(bundle.files["items.json"])
    if data.get("broken"):
        raise ValueError("the item table does not fit this code")
    return data["items"]


def s3_pointer(s3: Any) -> ChampionPointer | None:
    try:
        body = s3.get_object(Bucket=TEST_BUCKET, Key=POINTER_KEY)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None
    return ChampionPointer.model_validate_json(body)
