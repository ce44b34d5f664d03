"""A primary of the Redis Cluster is killed (SIGKILL) while events flow through the product's feature store.

The cluster is the test's own (local.redis_cluster: 3 primaries, 3 replicas, cluster-node-timeout 1 s), the client
the one the product builds for REDIS_CLUSTER=true (recloop.adapters.redis.connect). The primary killed serves the
global keys every event updates (popularity, counters...), so every event needs it: the worst case.

What the window may lose: replication is asynchronous, so writes the killed primary acknowledged but had not yet sent
to its replica are gone once the replica takes over. Such an event returned success *before* the kill. Nothing else
may be lost:

- every event applied (and replicated, checked by the replica's offset) before the kill is there in full afterwards;
- every call during the window either returns (the event is there in full, if the call started after the kill) or
  raises one of the errors the product handles as "Redis unavailable" (adapters.redis.REDIS_ERRORS); a call that
  raised may have left part of its event applied, as the store's docstring says of a cluster;
- no event is counted twice (the client's retries resend only commands that were never applied, short of a reply
  lost after the replica got the write);
- once the replica has taken over, every call succeeds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.cluster import ClusterNode as Seed
from redis.cluster import RedisCluster

from local.processes import wait_until
from local.redis_cluster import ClusterNode, RedisClusterProcesses
from recloop.adapters.redis import REDIS_ERRORS, Keys
from recloop.container import get_container, reset_container
from recloop.core.events import EventType, Interaction
from recloop.features.store import DONE, FeatureStore

pytestmark = pytest.mark.cluster_only("kills a primary of a Redis Cluster of its own")

T0 = 1_800_000_000.0
# The failover must be over within this (cluster-node-timeout 1 s, then the replica's election).
FAILOVER_SECONDS = 10.0


@dataclass
class Call:
    number: int
    started: float
    finished: float = 0.0
    error: BaseException | None = None


class Traffic:
    """One writer applying event after event, as an event function does, each call timed and its error kept."""

    def __init__(self, store: FeatureStore, first: int) -> None:
        self.store = store
        self.next = first
        self.calls: list[Call] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            call = Call(self.next, time.monotonic())
            try:
                self.store.apply(click(self.next))
            except Exception as exc:  # any kind: the test checks which
                call.error = exc
            call.finished = time.monotonic()
            self.calls.append(call)
            self.next += 1


def click(number: int) -> Interaction:
    """Event `number`: its own user and its own item, so each event's keys say whether it is there."""
    return Interaction(
        event_id=f"ev-{number}",
        user_id=f"user-{number}",
        item_id=f"item-{number}",
        event_type=EventType.CLICK,
        timestamp=T0 + number,
        received_at=T0 + number,
    )


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisClusterProcesses]:
    with RedisClusterProcesses.start(tmp_path / "cluster") as started:
        yield started


@pytest.fixture
def store(env: dict[str, str], cluster: RedisClusterProcesses, monkeypatch: pytest.MonkeyPatch) -> FeatureStore:
    """The product's feature store over the product's cluster client."""
    monkeypatch.setenv("REDIS_URL", cluster.url)
    monkeypatch.setenv("REDIS_CLUSTER", "true")
    reset_container()
    return get_container().store


def presence(checker: RedisCluster, number: int) -> dict[str, bool]:
    """Which parts of event `number` the cluster holds."""
    event = click(number)
    return {
        "user": checker.hget(Keys.user_items(event.user_id), event.item_id) is not None,
        "item": checker.hget(Keys.item_features(event.item_id), "cnt:click") == "1",
        "claim": checker.get(Keys.user_event_seen(event.user_id, event.event_id)) == DONE,
    }


def replicated(cluster: RedisClusterProcesses, primary: ClusterNode, timeout: float = 5.0) -> None:
    """Wait until the replica of `primary` has everything the primary has written so far (what WAIT checks)."""
    replica = cluster.replica_of(primary)
    with cluster.client(primary.port) as source, cluster.client(replica.port) as copy:
        written = source.info("replication")["master_repl_offset"]
        deadline = time.monotonic() + timeout
        while copy.info("replication")["slave_repl_offset"] < written:
            assert time.monotonic() < deadline, "the replica did not catch up"
            time.sleep(0.01)


def test_a_killed_primary_fails_over_and_loses_only_unreplicated_writes(
    cluster: RedisClusterProcesses, store: FeatureStore, record_property
) -> None:
    primaries = cluster.primaries()
    assert len(primaries) == 3 and all(cluster.replica_of(p).role == "replica" for p in primaries)
    victim = cluster.primary_for(Keys.POPULARITY)
    replica = cluster.replica_of(victim)

    # Before: applied, and replicated.
    before = 200
    for number in range(before):
        assert store.apply(click(number)) is True
    replicated(cluster, victim)

    # During: the kill, then the replica's election.
    with Traffic(store, before) as traffic:
        time.sleep(0.3)
        killed_at = time.monotonic()
        cluster.kill(victim)
        while not any(n.port == replica.port and n.role == "primary" for n in cluster.nodes()):
            assert time.monotonic() - killed_at < FAILOVER_SECONDS, "the replica did not take over"
            time.sleep(0.02)
        promoted_at = time.monotonic()
        cluster.wait_until_ok(FAILOVER_SECONDS)
        time.sleep(0.5)  # traffic on the new primary
    calls = traffic.calls

    # After: every call succeeds.
    after = range(calls[-1].number + 1, calls[-1].number + 101)
    for number in after:
        assert store.apply(click(number)) is True

    survivors = [Seed("127.0.0.1", node.port) for node in cluster.nodes() if cluster.running(node.port)]
    with RedisCluster(startup_nodes=survivors, decode_responses=True) as checker:
        full = {"user": True, "item": True, "claim": True}
        assert [n for n in range(before) if presence(checker, n) != full] == []
        assert [n for n in after if presence(checker, n) != full] == []

        succeeded = [call for call in calls if call.error is None]
        lost = [call for call in succeeded if presence(checker, call.number) != full]
        # Lost: only what the killed primary acknowledged before it died.
        assert all(call.finished <= killed_at for call in lost), [(c.number, c.finished - killed_at) for c in lost]
        failed = [call for call in calls if call.error is not None]
        assert all(isinstance(call.error, REDIS_ERRORS) for call in failed), {repr(c.error) for c in failed}
        assert all(call.finished >= killed_at for call in failed)  # no failure before the fault
        assert all(call.started <= promoted_at + 2.0 for call in failed)  # none long after the replica took over
        # Nothing counted twice, however often the client retried a command.
        numbers = range(after[-1] + 1)
        counts = [checker.hget(Keys.item_features(f"item-{n}"), "cnt:click") for n in numbers]
        assert all(count in (None, "1") for count in counts)

    first_success = min((c.finished for c in succeeded if c.started > killed_at), default=None)
    window = {
        "failover_seconds": round(promoted_at - killed_at, 3),
        "first_success_after_kill_seconds": None if first_success is None else round(first_success - killed_at, 3),
        "calls": len(calls),
        "failed_calls": len(failed),
        "errors": sorted({type(call.error).__name__ for call in failed}),
        "longest_failed_call_seconds": round(max((c.finished - c.started for c in failed), default=0.0), 3),
        "lost_acknowledged_before_kill": len(lost),
    }
    for name, value in window.items():
        record_property(name, value)
    print(f"failover window: {window}")
    assert first_success is not None and failed, window  # the kill was felt, and traffic resumed

    # The killed node comes back (it says "primary" until it hears of the newer epoch) as the new primary's replica.
    cluster.restart(victim)

    def back() -> ClusterNode | None:
        node = next(node for node in cluster.nodes() if node.port == victim.port)
        return node if node.role == "replica" and not node.failed else None

    assert wait_until(back, 30, "the killed node back as a replica").primary_id == replica.node_id
    cluster.wait_until_ok(30)


def test_the_launcher_stops_every_server(cluster: RedisClusterProcesses) -> None:
    nodes = cluster.nodes()
    assert sorted(node.role for node in nodes) == ["primary"] * 3 + ["replica"] * 3
    assert sum(node.slot_count for node in nodes) == 16384
    cluster.stop()
    assert not any(cluster.running(port) for port in cluster.ports)
