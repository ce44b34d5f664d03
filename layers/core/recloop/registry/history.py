"""Champion changes, one S3 record each (append-only, best effort: the pointer itself is the truth).

    models/_history/<time>-<version>.json
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger

from recloop.adapters.objects import ObjectStore
from recloop.registry.versions import MODELS_PREFIX

logger = Logger(child=True)

HISTORY_PREFIX = f"{MODELS_PREFIX}_history/"


class ChampionHistory:
    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects

    def record(self, pointer: dict[str, Any], action: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        body = json.dumps({"action": action, **pointer}).encode()
        try:
            self.objects.put(f"{HISTORY_PREFIX}{stamp}-{pointer['version']}.json", body)
        except Exception as exc:  # the pointer is written; a missing history line must not fail the promotion
            logger.warning("champion history not recorded", extra={"error": repr(exc)})

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """Champion changes, newest first."""
        records = []
        for key in sorted(self.objects.keys(HISTORY_PREFIX), reverse=True)[:limit]:
            stored = self.objects.get(key)
            if stored is not None:
                records.append(json.loads(stored[0]))
        return records
