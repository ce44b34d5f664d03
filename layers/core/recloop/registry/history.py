"""Champion changes, one S3 record each (append-only, best effort: the pointer itself is the truth).

    models/_history/<time>-<version>.json

Keys sort by time (fixed-width UTC stamps), so the oldest records are the first listed; each record trims the
trail to the newest MAX_HISTORY_RECORDS.
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
# Online updates change the champion as often as the buffer fills, so the trail needs a bound. recent() shows 50;
# 1000 keeps six weeks of hourly updates, and the trim after each record lists them in one or two S3 requests.
MAX_HISTORY_RECORDS = 1000


class ChampionHistory:
    def __init__(self, objects: ObjectStore, max_records: int = MAX_HISTORY_RECORDS) -> None:
        self.objects = objects
        self.max_records = max_records

    def record(self, pointer: dict[str, Any], action: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        body = json.dumps({"action": action, **pointer}).encode()
        try:
            self.objects.put(f"{HISTORY_PREFIX}{stamp}-{pointer['version']}.json", body)
        except Exception as exc:  # the pointer is written; a missing history line must not fail the promotion
            logger.warning("champion history not recorded", extra={"error": repr(exc)})
            return
        try:
            self.trim()
        except Exception as exc:  # an untrimmed trail is trimmed by the next record
            logger.warning("champion history not trimmed", extra={"error": repr(exc)})

    def trim(self) -> None:
        """Delete all but the newest `max_records` records."""
        keys = list(self.objects.keys(HISTORY_PREFIX))  # oldest first
        if len(keys) > self.max_records:
            self.objects.delete_many(keys[: len(keys) - self.max_records])

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """Champion changes, newest first."""
        records = []
        for key in sorted(self.objects.keys(HISTORY_PREFIX), reverse=True)[:limit]:
            stored = self.objects.get(key)
            if stored is not None:
                records.append(json.loads(stored[0]))
        return records
