"""Stream records and Kinesis event-source-mapping batches shaped like the sample in events/."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

from recloop.core.events import Interaction
from recloop.ingest.consumer import StreamRecord
from recloop.registry.model_registry import ModelRegistry
from tests.support.environment import EVENTS_DIR
from tests.support.learning import champion, stream_with_new_item

SHARD = "shardId-000000000000"


def records(events: list[Interaction], first_sequence: int = 1000) -> list[StreamRecord]:
    return [StreamRecord(SHARD, str(first_sequence + n), e.to_record()) for n, e in enumerate(events)]


def kinesis_batch(records: list[StreamRecord]) -> dict:
    """An event source mapping batch, shaped like the sample in events/ (from `sam local generate-event`)."""
    template = json.loads((EVENTS_DIR / "online_update" / "kinesis_batch_one_record.json").read_text())["Records"][0]
    batch = []
    for r in records:
        item = json.loads(json.dumps(template))
        item["eventID"] = f"{r.shard_id}:{r.sequence_number}"
        item["kinesis"].update(sequenceNumber=r.sequence_number, data=base64.b64encode(r.data).decode())
        batch.append(item)
    return {"Records": batch}


def published_twice(
    handler: Callable[[dict], dict], registry: ModelRegistry, first: str = "mf-online-test-0"
) -> list[str]:
    """champion -> v1 -> v2, each by a full buffer through the stream; the three versions in that order."""
    champion(registry, first)
    for n in range(2):
        events = stream_with_new_item(40, f"a-new-{n}", 1_700_000_000.0 + 100_000 * (n + 1))[:40]
        assert handler(kinesis_batch(records(events, first_sequence=1000 + 100 * n))) == {"batchItemFailures": []}
    pointer = registry.champion(use_cache=False)
    return [first, pointer.previous_version, pointer.version]
