"""Faults during an online update: the Lambda killed at a chosen point (as a timeout kills it), an operator's
rollback meanwhile. The session's real Redis (a cluster under RECLOOP_TEST_REDIS=cluster), and moto's server as the
AWS emulator that both the killed process and the test see; the end state checked is the champion, the registry's
versions and history, and the buffer.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import redis
from moto.server import ThreadedMotoServer

from recloop.adapters.objects import ObjectStore
from recloop.adapters.redis import Keys
from recloop.container import get_container, reset_container
from recloop.learning.online.buffer import OnlineBuffer
from recloop.learning.online.results import UpdateOutcome
from recloop.registry.model_registry import ModelRegistry
from tests.support.environment import REGION, ROOT, TEST_BUCKET
from tests.support.learning import champion, stream_with_new_item

LOCK_SECONDS = 2
# The update runs in its own process and stops for good right after publishing, before trimming the buffer:
# where a Lambda timeout would end it.
KILLED_AFTER_PUBLISHING = """
import time
from recloop.learning.online.buffer import OnlineBuffer

def stopped_here(self, sequence):
    print("published", flush=True)
    time.sleep(3600)

OnlineBuffer.trim_through = stopped_here
from recloop.container import get_container
get_container().online_learner.update()
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def emulator() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10).close()
    yield url
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10).close()
    server.stop()


@pytest.fixture
def deployment(env: dict[str, str], emulator: str, redis_client: redis.Redis, monkeypatch) -> dict[str, str]:
    values = {
        **env,
        "AWS_ENDPOINT_URL": emulator,
        "ONLINE_LEARNING_BUFFER_SIZE": "40",
        "ONLINE_LEARNING_BATCH_SIZE": "8",
        "ONLINE_LEARNING_LOCK_SECONDS": str(LOCK_SECONDS),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    boto3.client("s3", region_name=REGION, endpoint_url=emulator).create_bucket(Bucket=TEST_BUCKET)
    reset_container()
    return values


def registry_of(deployment: dict[str, str], redis_client: redis.Redis) -> ModelRegistry:
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=deployment["AWS_ENDPOINT_URL"])
    return ModelRegistry(ObjectStore(s3, TEST_BUCKET), redis_client)


def test_an_update_killed_after_publishing_is_not_learned_twice(deployment, redis_client: redis.Redis) -> None:
    registry = registry_of(deployment, redis_client)
    champion(registry)
    buffer = OnlineBuffer(redis_client, get_container().settings)
    for event in stream_with_new_item(40):  # 60 events; an update takes 40
        buffer.append_once(event)

    environ = {**os.environ, "PYTHONPATH": f"{ROOT / 'layers' / 'core'}{os.pathsep}{ROOT}"}
    update = subprocess.Popen(
        [sys.executable, "-c", KILLED_AFTER_PUBLISHING], env=environ, stdout=subprocess.PIPE, text=True
    )
    try:
        assert update.stdout is not None and update.stdout.readline().strip() == "published"
    finally:
        update.kill()  # SIGKILL: no finally, no lock release; as a Lambda timeout ends the process
        update.wait(10)
    published = registry.champion(use_cache=False)
    assert published.previous_version == "mf-online-test-0"
    assert redis_client.llen(Keys.ONLINE_BUFFER) == 60  # not trimmed
    assert redis_client.get(Keys.ONLINE_LOCK) is not None  # held by the dead process until it expires

    time.sleep(LOCK_SECONDS + 0.2)
    learner = get_container().online_learner
    assert learner.update().outcome is UpdateOutcome.EMPTY  # what the champion learned is dropped, not relearned
    assert redis_client.llen(Keys.ONLINE_BUFFER) == 20
    assert learner.update().outcome in (UpdateOutcome.PUBLISHED, UpdateOutcome.ROLLED_BACK)  # the 20 new ones
    assert redis_client.llen(Keys.ONLINE_BUFFER) == 0
    versions = [m.version for m in registry.list_versions()]
    after = registry.champion(use_cache=False)
    assert len(versions) == (3 if after.version != published.version else 2)
    assert registry.get(published.version).online_position.sequence == 40
    if after.version != published.version:
        assert registry.get(after.version).online_position.sequence == 60
        assert registry.get(after.version).parent_version == published.version
    history = registry.history()
    assert [h["version"] for h in reversed(history)][:2] == ["mf-online-test-0", published.version]


def test_an_operators_rollback_during_an_update_is_never_overridden(deployment, redis_client: redis.Redis, monkeypatch):
    """The operator rolls back while an update trains on the champion it read: the rollback stands, the update's
    result is discarded (no orphan version), and its events stay for an update of the operator's champion."""
    registry = registry_of(deployment, redis_client)
    champion(registry, "mf-online-test-a")
    champion(registry, "mf-online-test-b")
    buffer = OnlineBuffer(redis_client, get_container().settings)
    events = stream_with_new_item(20)
    for event in events:
        buffer.append_once(event)
    learner = get_container().online_learner
    save = learner.checkpoints.save

    def operator_rolls_back_meanwhile(version: str, reason: str) -> Any:
        saved = save(version, reason)
        operator = ModelRegistry(registry.objects)  # another process: no shared cache
        operator.rollback(reason="operator: b misbehaves")
        return saved

    monkeypatch.setattr(learner.checkpoints, "save", operator_rolls_back_meanwhile)
    result = learner.update()

    assert result.outcome is UpdateOutcome.SUPERSEDED
    pointer = registry.champion(use_cache=False)
    assert (pointer.version, pointer.previous_version) == ("mf-online-test-a", "mf-online-test-b")
    assert sorted(m.version for m in registry.list_versions()) == ["mf-online-test-a", "mf-online-test-b"]
    assert [h["action"] for h in registry.history()][:1] == ["rollback"]
    assert redis_client.llen(Keys.ONLINE_BUFFER) == len(events)
    monkeypatch.undo()
    assert learner.update().from_version == "mf-online-test-a"  # the next update starts from the operator's choice
