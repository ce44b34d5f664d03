"""Checkpoints: the registry versions an online update started from, the ones a rollback may return to.

    checkpoints/<version>.json   a record naming an immutable registry version (idempotent per version)

The newest MAX_CHECKPOINTS are kept. A version that falls out of them is deleted from the registry if online
learning made it and nothing serves it: one is published every buffer, and only checkpoints can be rolled back to.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger
from pydantic import BaseModel

from recloop.adapters.objects import ObjectStore
from recloop.learning.online.errors import CheckpointNotFoundError, NoPreviousCheckpointError

logger = Logger(child=True)

CHECKPOINTS_PREFIX = "checkpoints/"
MAX_CHECKPOINTS = 10


class Checkpoint(BaseModel):
    version: str
    created_at: str
    reason: str = ""


class Checkpoints:
    def __init__(self, objects: ObjectStore, registry: Any) -> None:
        self.objects = objects
        self.registry = registry

    @staticmethod
    def key(version: str) -> str:
        return f"{CHECKPOINTS_PREFIX}{version}.json"

    def save(self, version: str, reason: str) -> Checkpoint:
        """Record `version` as a checkpoint and keep only the newest MAX_CHECKPOINTS."""
        checkpoint = Checkpoint(
            version=version, created_at=datetime.now(UTC).isoformat(timespec="microseconds"), reason=reason
        )
        self.objects.put(self.key(version), checkpoint.model_dump_json().encode())
        if self.objects.count(CHECKPOINTS_PREFIX) > MAX_CHECKPOINTS:  # only then read the records, to order them
            for old in self.newest_first()[MAX_CHECKPOINTS:]:
                self.objects.delete(self.key(old.version))
                self._prune(old.version)
        return checkpoint

    def newest_first(self) -> list[Checkpoint]:
        found: list[Checkpoint] = []
        for key in self.objects.keys(CHECKPOINTS_PREFIX):
            stored = self.objects.get(key)
            if stored is not None:
                found.append(Checkpoint.model_validate(json.loads(stored[0])))
        found.sort(key=lambda c: c.created_at, reverse=True)
        return found

    def rollback_target(self, current: str | None, version: str | None = None) -> Checkpoint:
        """The checkpoint named, else the newest that is not `current`."""
        checkpoints = self.newest_first()
        if version is None:
            target = next((c for c in checkpoints if c.version != current), None)
            if target is None:
                raise NoPreviousCheckpointError()
            return target
        target = next((c for c in checkpoints if c.version == version), None)
        if target is None:
            raise CheckpointNotFoundError(version)
        return target

    def _prune(self, version: str) -> None:
        try:
            metadata = self.registry.get(version)
            if "online" in metadata.hyperparameters:
                self.registry.delete(version)
        except Exception as exc:  # pruning is housekeeping: it must never fail an update
            logger.info("online version kept", extra={"model_version": version, "reason": repr(exc)})
