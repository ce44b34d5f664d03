"""A model version as stored in the registry: metadata plus named files, each with its checksum."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from recloop.core.errors import ConflictError

BUNDLE_FORMAT = 1
METADATA_FILE = "metadata.json"


class ModelKind(StrEnum):
    POPULARITY = "popularity"
    MF = "mf"
    LGBM = "lgbm"


class CorruptModelError(ConflictError, ValueError):
    """A stored version is missing files, fails its checksums or cannot be loaded: it can never serve."""

    code = "model_not_servable"
    hint = "refused, the champion is unchanged"


class DataWindow(BaseModel):
    start: float | None = None  # unix seconds of the first training event
    end: float | None = None  # unix seconds of the last training event
    interactions: int = 0


class OnlinePosition(BaseModel):
    """A position in the online-learning buffer (recloop.learning.online.buffer): which buffer, and the sequence
    number of the last event learned."""

    buffer_id: str
    sequence: int


class ModelMetadata(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: str
    kind: ModelKind
    format: int = BUNDLE_FORMAT
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    parent_version: str | None = None
    data_window: DataWindow = Field(default_factory=DataWindow)
    feature_spec: dict[str, Any] = Field(default_factory=dict)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict, description="file name -> sha256 of its bytes")
    online_position: OnlinePosition | None = Field(
        None, description="online updates: how far into the online-learning buffer this version has learned"
    )


class ModelBundle:
    def __init__(self, metadata: ModelMetadata, files: dict[str, bytes]) -> None:
        self.metadata = metadata
        self.files = files
        self.metadata.files = {name: sha256(data) for name, data in files.items()}

    def serialised(self) -> dict[str, bytes]:
        """Every file to store, metadata.json included (written last by the registry: its commit marker)."""
        return {**self.files, METADATA_FILE: self.metadata.model_dump_json(indent=2).encode()}

    @classmethod
    def from_files(cls, files: dict[str, bytes]) -> ModelBundle:
        """Rebuild a stored bundle, refusing it if anything is missing, altered or of an unknown format."""
        if METADATA_FILE not in files:
            raise CorruptModelError("metadata.json is missing")
        try:
            metadata = ModelMetadata.model_validate(json.loads(files[METADATA_FILE]))
        except (ValueError, TypeError) as exc:
            raise CorruptModelError(f"metadata.json is unreadable: {exc}") from exc
        if metadata.format != BUNDLE_FORMAT:
            raise CorruptModelError(f"bundle format {metadata.format} is not supported (expected {BUNDLE_FORMAT})")
        expected = dict(metadata.files)
        payload = {name: data for name, data in files.items() if name != METADATA_FILE}
        for name, digest in expected.items():
            if name not in payload:
                raise CorruptModelError(f"{name} is missing")
            if sha256(payload[name]) != digest:
                raise CorruptModelError(f"{name} does not match its checksum")
        bundle = cls(metadata, {name: payload[name] for name in expected})
        return bundle


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
