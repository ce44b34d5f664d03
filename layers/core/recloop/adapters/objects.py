"""S3 as an object store: reads with ETags, conditional writes, listings, moves, deletes.

Every conditional write the system relies on is here: `put_if_absent` (If-None-Match: *) makes registry versions
and archive records write-once, `put_if_match` (If-Match on an ETag) makes the champion pointer a compare-and-swap.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from recloop.adapters.aws import aws_errors, error_code

# A missing object, as get_object and head_object report it.
MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
# 412 when a condition failed; 409 when S3 saw a concurrent conditional write to the same key.
PRECONDITION_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})
# The most keys one DeleteObjects request takes.
DELETE_BATCH = 1000


class ObjectsNotDeletedError(Exception):
    """DeleteObjects answered, but refused some keys (it reports them in its reply instead of raising)."""


class ObjectStore:
    """One bucket. Errors other than "missing" and "condition failed" propagate as the SDK raises them.

    `probe_prefix` is where health probes list: the functions' roles may list only the prefixes they use.
    """

    def __init__(self, s3_client: Any, bucket: str, probe_prefix: str = "") -> None:
        if not bucket:
            raise ValueError("an object store needs a bucket name (BUCKET_NAME)")
        self.s3 = s3_client
        self.bucket = bucket
        self.probe_prefix = probe_prefix

    def get(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and ETag, or None if it does not exist."""
        try:
            response = self.s3.get_object(Bucket=self.bucket, Key=key)
        except aws_errors() as exc:
            if error_code(exc) in MISSING_CODES:
                return None
            raise
        return response["Body"].read(), response["ETag"]

    def exists(self, key: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.bucket, Key=key)
        except aws_errors() as exc:
            if error_code(exc) in MISSING_CODES:
                return False
            raise
        return True

    def put(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def put_if_absent(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> bool:
        """Write only if the key is free; False if an object is already there."""
        return self._put_conditionally(key, data, content_type, {"IfNoneMatch": "*"})

    def put_if_match(self, key: str, data: bytes, etag: str | None, content_type: str = "application/json") -> bool:
        """Write only if the object still has `etag` (or, with None, does not exist); False if it changed."""
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        return self._put_conditionally(key, data, content_type, condition)

    def _put_conditionally(self, key: str, data: bytes, content_type: str, condition: dict[str, str]) -> bool:
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, **condition)
        except aws_errors() as exc:
            if error_code(exc) in PRECONDITION_CODES:
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=key)

    def delete_many(self, keys: Sequence[str]) -> None:
        """Delete `keys`, up to DELETE_BATCH per request; raises if S3 could not delete one of them."""
        for start in range(0, len(keys), DELETE_BATCH):
            batch = [{"Key": key} for key in keys[start : start + DELETE_BATCH]]
            response = self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            failed = response.get("Errors") or []
            if failed:
                first = failed[0]
                raise ObjectsNotDeletedError(
                    f"{len(failed)} of {len(batch)} objects not deleted, e.g. {first.get('Key')}: {first.get('Code')}"
                )

    def move(
        self, source: str, destination: str, metadata: dict[str, str], content_type: str = "application/json"
    ) -> None:
        """Copy `source` to `destination` (same bytes, `metadata` as its user metadata), then delete `source`.
        Not atomic: a failure between the two leaves both, and a second move overwrites the copy."""
        self.s3.copy_object(
            Bucket=self.bucket,
            Key=destination,
            CopySource={"Bucket": self.bucket, "Key": source},
            MetadataDirective="REPLACE",
            Metadata=metadata,
            ContentType=content_type,
        )
        self.delete(source)

    def keys(self, prefix: str) -> Iterator[str]:
        """Every key under `prefix`, in S3's (lexicographic) order."""
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield obj["Key"]

    def count(self, prefix: str) -> int:
        return sum(1 for _ in self.keys(prefix))

    def folders(self, prefix: str) -> Iterator[str]:
        """The names of the "folders" directly under `prefix` (common prefixes up to the next "/"), without it."""
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                yield common["Prefix"][len(prefix) :].rstrip("/")

    def probe(self) -> None:
        """Raise unless the bucket answers a listing of one key under `probe_prefix` (health checks)."""
        self.s3.list_objects_v2(Bucket=self.bucket, Prefix=self.probe_prefix, MaxKeys=1)
