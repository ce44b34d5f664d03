"""The interaction stream (Kinesis): events in, partitioned by user so each user's events stay in order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aws_lambda_powertools import Logger

from recloop.core.errors import UnavailableError
from recloop.core.events import Interaction

logger = Logger(child=True)

KINESIS_BATCH_LIMIT = 500


class StreamUnavailableError(UnavailableError):
    """The event stream could not take the events; nothing was written."""

    code = "stream_unavailable"


class KinesisEventStream:
    def __init__(self, kinesis_client: Any, stream_name: str) -> None:
        self.client = kinesis_client
        self.stream_name = stream_name

    def put(self, events: Sequence[Interaction]) -> list[str | None]:
        """Write events; one entry per event: None when stored, else the reason it was not.
        Raises StreamUnavailableError when the stream took none of them for want of an answer."""
        outcome: list[str | None] = []
        try:
            for start in range(0, len(events), KINESIS_BATCH_LIMIT):
                chunk = events[start : start + KINESIS_BATCH_LIMIT]
                response = self.client.put_records(
                    StreamName=self.stream_name,
                    Records=[{"Data": e.to_record(), "PartitionKey": e.user_id} for e in chunk],
                )
                for record in response["Records"]:
                    error = record.get("ErrorCode")
                    outcome.append(f"{error}: {record.get('ErrorMessage', '')}".strip() if error else None)
        except Exception as exc:  # botocore raises many types; all mean the stream is unavailable
            logger.warning("event stream unavailable", extra={"error": repr(exc)})
            if not outcome:
                raise StreamUnavailableError(str(exc)) from exc
            outcome.extend(["stream unavailable"] * (len(events) - len(outcome)))
        return outcome

    def probe(self) -> None:
        """Raise unless the stream answers (health checks)."""
        self.client.describe_stream_summary(StreamName=self.stream_name)
