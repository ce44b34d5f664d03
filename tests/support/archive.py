"""The S3 event archive as tests look at it: every object with the event ids it holds, and what training reads."""

from __future__ import annotations

import gzip
import json
from typing import Any

from recloop.adapters.objects import ObjectStore
from recloop.learning.archive import ARCHIVE_PREFIX, prepare_dataset
from tests.support.environment import TEST_BUCKET


def archive_objects(s3: Any, bucket: str = TEST_BUCKET) -> dict[str, list[str]]:
    """Each batch object and compacted part, with the event ids of its lines in their order."""
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=ARCHIVE_PREFIX):
        for listed in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=listed["Key"])["Body"].read()
            if listed["Key"].endswith(".gz"):
                body = gzip.decompress(body)
            found[listed["Key"]] = [json.loads(line)["event_id"] for line in body.splitlines() if line.strip()]
    return found


def archived_event_ids(s3: Any, bucket: str = TEST_BUCKET) -> list[str]:
    """The event ids training reads from the archive (one per event), sorted."""
    return sorted(event.event_id for event in prepare_dataset(ObjectStore(s3, bucket)))
