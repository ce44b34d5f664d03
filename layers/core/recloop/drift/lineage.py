"""Served traffic into its lineage's window, on the recommend path.

The served window is keyed by the version carrying the reference (the lineage root), not by the served version:
online learning promotes a child every buffer-full, and its traffic belongs to its lineage's window. The mapping is
the ReferenceStore's, remembered in process: one metadata read the first time a version is served, none after.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger

from recloop.drift.reference import ReferenceNotFoundError, ReferenceStore
from recloop.drift.window import DriftWindow
from recloop.registry.errors import InvalidVersionError

logger = Logger(child=True)

# After a failed lookup (S3 unreachable), a version's traffic is not observed for this long rather than paying a
# failing round trip on every request.
LOOKUP_RETRY_SECONDS = 60.0


class LineageObserver:
    """The recommend path's `observe_scored`: a request's scored candidates into the served version's lineage's
    window. A version without a reference in its lineage has nothing to be compared with and is not observed."""

    def __init__(
        self,
        window: DriftWindow,
        references: ReferenceStore,
        retry_seconds: float = LOOKUP_RETRY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.references = references
        self.retry_seconds = retry_seconds
        self.clock = clock
        self._failed_at: dict[str, float] = {}

    def __call__(self, pipe: Any, model_version: str, rows: Any, scores: Any) -> None:
        lineage = self.lineage(model_version)
        if lineage is not None:
            self.window.observe_scored(lineage, rows, scores, pipeline=pipe)

    def lineage(self, model_version: str) -> str | None:
        failed = self._failed_at.get(model_version)
        if failed is not None and self.clock() - failed < self.retry_seconds:
            return None
        try:
            lineage = self.references.reference_version(model_version)
        except (ReferenceNotFoundError, InvalidVersionError):
            return None
        except Exception as exc:  # drift bookkeeping never fails a recommendation
            self._failed_at[model_version] = self.clock()
            logger.warning("served version's lineage unknown", extra={"version": model_version, "error": repr(exc)})
            return None
        self._failed_at.pop(model_version, None)
        return lineage
