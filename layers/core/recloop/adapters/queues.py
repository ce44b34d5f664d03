"""SQS: messages to a queue (the stream consumer's dead letters)."""

from __future__ import annotations

import json
from typing import Any


class Queue:
    def __init__(self, sqs_client: Any, queue_url: str) -> None:
        self.sqs = sqs_client
        self.queue_url = queue_url

    def send(self, body: dict[str, Any]) -> None:
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=json.dumps(body))
