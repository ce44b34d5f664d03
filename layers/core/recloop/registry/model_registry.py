"""The model registry as the rest of the system uses it: versions, the champion, and its history, over one bucket.

Every change of champion first loads the version exactly as serving will (`load_model`), so a version that cannot
serve never takes over.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from recloop.adapters.objects import ObjectStore
from recloop.adapters.redis import RedisClient
from recloop.models.bundle import ModelBundle, ModelMetadata
from recloop.models.loading import load_model
from recloop.registry.champion import Champion, ChampionPointer, PointerCache
from recloop.registry.errors import ModelNotFoundError, VersionInUseError
from recloop.registry.history import ChampionHistory
from recloop.registry.versions import ModelVersions

# How far `lineage` follows parents: online updates publish a child per mini-batch, and a holdout spans a few
# hundred of them at most.
MAX_LINEAGE_STEPS = 5000


class ModelRegistry:
    def __init__(
        self, objects: ObjectStore, redis_client: RedisClient | None = None, pointer_cache_seconds: float = 5.0
    ) -> None:
        self.objects = objects
        self.versions = ModelVersions(objects)
        self.history_log = ChampionHistory(objects)
        self.champion_pointer = Champion(
            objects, self._load_servable, PointerCache(redis_client, pointer_cache_seconds), self.history_log
        )

    def _load_servable(self, version: str) -> ModelBundle:
        bundle = self.versions.load(version)
        load_model(bundle)  # exactly what serving will do with it
        return bundle

    # Versions.
    def register(self, bundle: ModelBundle) -> ModelMetadata:
        return self.versions.register(bundle)

    def exists(self, version: str) -> bool:
        return self.versions.exists(version)

    def get(self, version: str) -> ModelMetadata:
        return self.versions.get(version)

    def list_versions(self) -> list[ModelMetadata]:
        return self.versions.list_versions()

    def load(self, version: str) -> ModelBundle:
        return self.versions.load(version)

    def lineage(self, version: str) -> Iterator[ModelMetadata]:
        """The version and its ancestors through `parent_version`, newest first, as far as they are registered
        (read one by one: a caller that stops early reads no further)."""
        current: str | None = version
        for _ in range(MAX_LINEAGE_STEPS):
            if current is None:
                return
            try:
                metadata = self.versions.get(current)
            except ModelNotFoundError:
                return
            yield metadata
            current = metadata.parent_version

    def as_it_stood(self, version: str, before: float | None) -> str:
        """The version, or its newest ancestor, that had learned from nothing at or after `before` (unix seconds).

        A candidate and the champion are compared on the same holdout of recent events; the champion of the moment
        may have learned those very events online, so it is judged as it stood when the holdout began. Where the
        lineage does not reach back that far (a parent deleted, or no ancestor old enough), the version itself."""
        if before is None:
            return version
        for metadata in self.lineage(version):
            if metadata.data_window.end is not None and metadata.data_window.end < before:
                return metadata.version
        return version

    def delete(self, version: str) -> None:
        """Remove a version that is neither the champion nor the one a rollback would return to."""
        pointer, _ = self.champion_pointer.read()
        if pointer is not None and version in (pointer.version, pointer.previous_version):
            raise VersionInUseError(version)
        self.versions.delete(version)

    # The champion.
    def champion(self, *, use_cache: bool = True) -> ChampionPointer | None:
        return self.champion_pointer.current(use_cache=use_cache)

    def promote(self, version: str, reason: str = "", *, expected_current: str | None = None) -> ChampionPointer:
        return self.champion_pointer.promote(version, reason, expected_current=expected_current)

    def rollback(self, reason: str = "") -> ChampionPointer:
        return self.champion_pointer.rollback(reason)

    def history(self, limit: int = 50) -> list[dict[str, Any]]:
        return self.history_log.recent(limit)
