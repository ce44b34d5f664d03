"""Redis connection and the key layout: every Redis key of the system is named here, and only here.

Keys are Redis-Cluster safe: everything about one user shares the hash tag ``{u:<id>}``, everything
about one item shares ``{i:<id>}``. Operations that span users, items and global keys are pipelined
(redis-py splits a cluster pipeline per node), or sent as a `WriteBatch` (one script per slot), never one cross-slot
script.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.cluster import ClusterPipeline, RedisCluster, key_slot
from redis.commands.core import CoreCommands, Script
from redis.credentials import CredentialProvider
from redis.exceptions import RedisClusterException

from recloop.adapters.redis_credentials import SecretCredentialProvider
from recloop.core.settings import Settings

RedisClient = Any  # redis.Redis or redis.cluster.RedisCluster; both expose the commands used here.
# What a Redis call raises when the server cannot be reached or answers with an error (OSError: a socket that failed
# before redis-py could wrap it; RedisClusterException, not a RedisError: a cluster client that reaches no node to
# learn the slots from, or finds a slot that no node serves, as during a failover).
RedisError = redis.RedisError
REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, RedisClusterException, OSError)
# Delete KEYS[1] only if it still holds ARGV[1]: how a holder gives up a claim or a lock it may have lost.
DELETE_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def connect(settings: Settings, credentials: CredentialProvider | None = None) -> RedisClient:
    """A client for REDIS_URL (no connection is opened yet). `credentials` (recloop.adapters.redis_credentials)
    authenticates every new connection: the URL never carries a token."""
    if not settings.redis_url:
        raise redis.ConnectionError("REDIS_URL is not set")
    options: dict[str, Any] = {
        "socket_timeout": settings.redis_timeout_seconds,
        "socket_connect_timeout": settings.redis_timeout_seconds,
        "decode_responses": True,
        "health_check_interval": 30,
        # RESP2: redis-py 8 converts every RESP3 sorted-set score back to the RESP2 shape in Python, which
        # dominated recommend latency (hundreds of neighbour scores per request).
        "protocol": 2,
    }
    if credentials is not None:
        options["credential_provider"] = credentials
    if settings.redis_tls_ca_file:  # the settings allow it with rediss:// only
        options["ssl_ca_certs"] = settings.redis_tls_ca_file
    if settings.redis_cluster:
        url = settings.redis_url
        return LazyCluster(lambda: _Cluster.from_url(url, **options))
    return redis.Redis.from_url(settings.redis_url, redis_connect_func=_on_connect, **options)


def is_cluster(client: RedisClient) -> bool:
    """Whether `client` talks to a Redis Cluster: a transaction (MULTI, WATCH) or a script there reaches one slot."""
    return isinstance(client, RedisCluster | LazyCluster)


def queue_script(pipe: Any, script: Script, keys: Sequence[str], args: Sequence[Any]) -> None:
    """Queue a registered script on the caller's pipeline. A cluster pipeline refuses EVALSHA (a node that lacks the
    script would answer NOSCRIPT, which redis-py cannot recover inside a pipeline), so there the script's text goes
    with EVAL (the pipeline's own eval() is a stub): each node compiles it once and keeps it."""
    if isinstance(pipe, ClusterPipeline):
        pipe.execute_command("EVAL", script.script, len(keys), *keys, *args)
    else:
        script(keys=keys, args=args, client=pipe)


# Runs a batch of single-key commands in one call. ARGV[1] is a JSON list with, per command, its name, the position
# of its key in KEYS and its arguments, as strings (one JSON argument packs and parses far cheaper than thousands).
RUN_COMMANDS = """
local commands = cjson.decode(ARGV[1])
for _, command in ipairs(commands) do
  redis.call(command[1], KEYS[command[2]], unpack(command, 3))
end
return #commands
"""


class WriteBatch(CoreCommands):
    """Writes queued as on a pipeline (`batch.hincrby(...)`, any single-key command whose key comes first) and sent
    by `execute()` as one script per hash slot.

    Against one server that is a single command for the whole batch: atomic like MULTI/EXEC, at a fraction of the
    client's cost of packing and parsing each command (the event path's main cost). On a cluster each slot's share is
    one script, atomic within the slot, and the scripts go in one pipeline. Replies are not returned: the batch is
    for writes whose results nobody reads. Made by a `BatchWriter`.
    """

    def __init__(self, client: RedisClient, script: Script) -> None:
        self._client = client
        self._script = script
        self._commands: list[tuple[Any, ...]] = []

    def execute_command(self, *args: Any, **options: Any) -> None:
        self._commands.append(args)

    def __len__(self) -> int:
        return len(self._commands)

    def execute(self) -> None:
        if not self._commands:
            return
        if not is_cluster(self._client):
            keys, args = _script_arguments(self._commands)
            self._script(keys=keys, args=args)
            return
        by_slot: dict[int, list[tuple[Any, ...]]] = {}
        for command in self._commands:
            by_slot.setdefault(key_slot(_encode_key(command[1])), []).append(command)
        pipe = self._client.pipeline()
        for commands in by_slot.values():
            keys, args = _script_arguments(commands)
            queue_script(pipe, self._script, keys, args)
        pipe.execute()


class BatchWriter:
    """Makes the WriteBatches of one client (its script registered once: EVALSHA, loaded again on NOSCRIPT)."""

    def __init__(self, client: RedisClient) -> None:
        self.client = client
        self._script = client.register_script(RUN_COMMANDS)

    def batch(self) -> WriteBatch:
        return WriteBatch(self.client, self._script)


def _script_arguments(commands: list[tuple[Any, ...]]) -> tuple[list[Any], list[str]]:
    """RUN_COMMANDS' KEYS (each key once) and ARGV for these commands. Numbers go as redis-py would send them (repr),
    not as JSON numbers, which Lua would print back with 17 digits."""
    keys: dict[Any, int] = {}
    entries = [
        [name, keys.setdefault(key, len(keys) + 1), *[a if isinstance(a, str) else repr(a) for a in rest]]
        for name, key, *rest in commands
    ]
    return list(keys), [json.dumps(entries)]


def _encode_key(key: Any) -> bytes:
    return key if isinstance(key, bytes) else str(key).encode()


class _Utf8:
    """What a Script asks of its client's encoder: the script's bytes, to name it by their SHA1."""

    @staticmethod
    def encode(value: str | bytes) -> bytes:
        return value if isinstance(value, bytes) else value.encode()


class LazyCluster:
    """A RedisCluster client built on its first command. RedisCluster's constructor connects (it reads the slot map
    and the command table from a node), so built at once a cluster unreachable at a cold start would fail the wiring,
    outside every handler's `except REDIS_ERRORS`; built here, it fails the first Redis call with a ConnectionError,
    as a single server's client does, and the next call tries again."""

    def __init__(self, build: Callable[[], RedisCluster]) -> None:
        self._build = build
        self._client: RedisCluster | None = None
        self._lock = threading.Lock()

    def cluster(self) -> RedisCluster:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    try:
                        self._client = self._build()
                    except RedisClusterException as exc:  # no node reachable, or a slot not served
                        raise redis.ConnectionError(str(exc)) from exc
        return self._client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cluster(), name)

    def register_script(self, script: str) -> Script:
        return Script(self, script)  # bound to this client: it connects when the script first runs

    def get_encoder(self) -> _Utf8:
        return _Utf8()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _handshake(connection: Any, handshake: Callable[[], None]) -> None:
    """redis-py's handshake (AUTH, client name, database) on a new connection; when the server refuses credentials
    read from a secret, once more on the same socket with the secret read again (it may have been rotated)."""
    try:
        handshake()
    except redis.AuthenticationError:
        provider = connection.credential_provider
        if not (isinstance(provider, SecretCredentialProvider) and provider.refused()):
            raise
        handshake()


def _on_connect(connection: Any) -> None:
    _handshake(connection, connection.on_connect)


class _Cluster(RedisCluster):
    """RedisCluster runs its own handshake on each node's new connections (it ignores `redis_connect_func` until
    after AUTH), so the retry after a refused secret wraps that."""

    def on_connect(self, connection: Any) -> None:
        _handshake(connection, lambda: super(_Cluster, self).on_connect(connection))


class Keys:
    """The names of every key RecLoop writes."""

    # Global (one slot each; small and hot).
    POPULARITY = "recloop:pop"
    CATALOG = "recloop:catalog"
    DECAY = "recloop:decay"
    COUNTERS = "recloop:counters"
    LATENCY_ENDPOINTS = "recloop:lat:endpoints"
    # The registry's champion pointer, cached for a few seconds (S3 holds the truth).
    CHAMPION_CACHE = "recloop:champion"
    # What recommend instances last reported serving, and why a champion failed to load.
    MODEL_STATUS = "recloop:model:status"
    # Online learning: the buffer, its lock and its statistics share the {olb} slot (one script may touch them).
    ONLINE_BUFFER = "{olb}:buffer"
    ONLINE_LOCK = "{olb}:lock"
    ONLINE_STATS = "{olb}:stats"
    ONLINE_UPDATES = "{olb}:updates"  # each update (JSON, newest first, capped): the status, the performance trigger
    ONLINE_SEQUENCE = "{olb}:seq"  # the last sequence number given to a buffered event
    ONLINE_CONSUMED = "{olb}:consumed"  # the sequence through which updates have consumed the buffer
    ONLINE_BUFFER_ID = "{olb}:id"  # this buffer's identity (a Redis that lost its data starts a new one)
    # The ranker's served-feature log (recloop.serving.served_log).
    SERVED_FEATURES = "{olr}:served"
    # The running experiments' definitions, cached for a few seconds (S3 holds the truth; a change deletes it).
    RUNNING_EXPERIMENTS = "recloop:experiments:running"
    # Retraining (recloop.retraining.status): its lock, its status hash and the count of new interactions share the
    # {rt} slot, so starting and finishing a run are one script or transaction.
    RETRAIN_LOCK = "{rt}:lock"  # the execution name of the retrain that holds it, with a TTL
    RETRAIN_STATUS = "{rt}:status"
    RETRAIN_NEW_INTERACTIONS = "{rt}:new"  # events applied for the first time since the last successful retrain
    RETRAIN_RUNS = "{rt}:runs"  # the finished runs (JSON, newest first, capped)

    # What a decay rescale rewrites (recloop.features.store.FeatureStore.rescale_decay): SCAN patterns, and the
    # popularity ranking's replacement, built aside and renamed over it (same slot: the hash tag is its name).
    USER_FEATURES_PATTERN = "{u:*}:f"
    ITEM_FEATURES_PATTERN = "{i:*}:f"
    COOCCURRENCE_PATTERN = "{i:*}:co"
    POPULARITY_RESCALED = "{recloop:pop}:rescaled"

    @staticmethod
    def online_buffer_event(event_id: str) -> str:
        """Claimed when an event enters the online-learning buffer, so a redelivery or a retry is buffered once."""
        return f"{{olb}}:ev:{event_id}"

    @staticmethod
    def trending(generation: int) -> str:
        """Sorted set of decayed trending scores of one generation (recloop.features.trending.TrendingRanking)."""
        return f"recloop:trend:{generation}"

    @staticmethod
    def user_features(user_id: str) -> str:
        return f"{{u:{user_id}}}:f"

    @staticmethod
    def user_items(user_id: str) -> str:
        """Hash item -> cumulative event weight: what the user has seen, liked or disliked."""
        return f"{{u:{user_id}}}:items"

    @staticmethod
    def user_recent(user_id: str) -> str:
        """List of ``item|event_type|timestamp``, newest first, capped."""
        return f"{{u:{user_id}}}:recent"

    @staticmethod
    def user_event_seen(user_id: str, event_id: str) -> str:
        return f"{{u:{user_id}}}:ev:{event_id}"

    @staticmethod
    def recommendation_log(user_id: str, recommendation_id: str) -> str:
        return f"{{u:{user_id}}}:rec:{recommendation_id}"

    @staticmethod
    def user_experiment_impressions(user_id: str) -> str:
        """List of the user's recent experiment impressions (JSON, newest first, capped; TTL the attribution window),
        read in one call to credit an event that names no recommendation."""
        return f"{{u:{user_id}}}:xrec"

    @staticmethod
    def item_features(item_id: str) -> str:
        return f"{{i:{item_id}}}:f"

    @staticmethod
    def item_cooccurrence(item_id: str) -> str:
        """Sorted set of items co-engaged with this one, decay-scaled scores."""
        return f"{{i:{item_id}}}:co"

    @staticmethod
    def metrics_latency(endpoint: str, minute: int) -> str:
        return f"recloop:lat:{endpoint}:{minute}"

    @staticmethod
    def metrics_events(minute: int) -> str:
        """Hash event type -> events applied in that minute (epoch minute), for the event rates over time."""
        return f"recloop:evm:{minute}"

    # Experiments (recloop.experiments.counters): everything about one experiment shares the hash tag {x:<id>}, so
    # claiming an outcome and counting it is one script.
    @staticmethod
    def experiment_arm(experiment_id: str, variant: str) -> str:
        """Hash of one variant's counters: impressions, conversions, negatives, latency_ms_sum."""
        return f"{{x:{experiment_id}}}:arm:{variant}"

    @staticmethod
    def experiment_latency(experiment_id: str, variant: str) -> str:
        """Hash latency bucket -> impressions of one variant (recloop.core.latency_histogram)."""
        return f"{{x:{experiment_id}}}:lat:{variant}"

    @staticmethod
    def experiment_outcome(experiment_id: str, outcome_id: str) -> str:
        """Claimed when an outcome is counted, so a redelivery or a retry counts once."""
        return f"{{x:{experiment_id}}}:out:{outcome_id}"

    @staticmethod
    def experiment_pattern(experiment_id: str) -> str:
        """SCAN pattern of every key of one experiment."""
        return f"{{x:{experiment_id}}}:*"

    # Drift detection's live window (recloop.drift.window): one reservoir per stream of observations, its rows and
    # its observation counter under one hash tag, so the reservoir script runs on one node of a cluster.
    @staticmethod
    def drift_reservoir(window: str) -> str:
        """Hash slot index -> encoded row: the reservoir's sample (at most its capacity)."""
        return f"{{dw:{window}}}:rows"

    @staticmethod
    def drift_reservoir_seen(window: str) -> str:
        """How many rows the reservoir has been offered since the window started."""
        return f"{{dw:{window}}}:seen"
