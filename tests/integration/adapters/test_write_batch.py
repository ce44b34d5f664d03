"""WriteBatch: writes queued like a pipeline's, sent as one script per hash slot (one command against one server)."""

from __future__ import annotations

import pytest
import redis

from recloop.adapters.redis import BatchWriter, Keys, is_cluster


def queue_writes(batch: object) -> None:
    batch.hincrby(Keys.user_features("u1"), "cnt:click", 1)
    batch.hincrbyfloat(Keys.user_features("u1"), "eng", 0.25)
    batch.hset(Keys.user_features("u1"), "last_ts", repr(1700000000.5))
    batch.lpush(Keys.user_recent("u1"), "a", "b", "c")
    batch.ltrim(Keys.user_recent("u1"), 0, 1)
    batch.hsetnx(Keys.item_features("i1"), "first_ts", "1")
    batch.hsetnx(Keys.item_features("i1"), "first_ts", "2")
    batch.zincrby(Keys.POPULARITY, 1.5, "i1")
    batch.zincrby(Keys.POPULARITY, 2.0, "i1")
    batch.zremrangebyrank(Keys.item_cooccurrence("i2"), 0, -2)
    batch.sadd(Keys.CATALOG, "i1", "i2", "café ☕")
    batch.set(Keys.user_event_seen("u1", "e1"), "done", ex=60)
    batch.expire(Keys.item_features("i1"), 3600)


def test_a_batch_does_what_its_commands_would_in_order(redis_client: redis.Redis) -> None:
    writer = BatchWriter(redis_client)
    redis_client.zadd(Keys.item_cooccurrence("i2"), {"x": 1, "y": 2, "z": 3})
    batch = writer.batch()
    queue_writes(batch)
    assert len(batch) == 13
    batch.execute()

    assert redis_client.hgetall(Keys.user_features("u1")) == {
        "cnt:click": "1",
        "eng": "0.25",
        "last_ts": "1700000000.5",
    }
    assert redis_client.lrange(Keys.user_recent("u1"), 0, -1) == ["c", "b"]
    assert redis_client.hget(Keys.item_features("i1"), "first_ts") == "1"
    assert redis_client.zscore(Keys.POPULARITY, "i1") == 3.5
    assert redis_client.zrange(Keys.item_cooccurrence("i2"), 0, -1) == ["z"]
    assert redis_client.smembers(Keys.CATALOG) == {"i1", "i2", "café ☕"}
    assert 0 < redis_client.ttl(Keys.user_event_seen("u1", "e1")) <= 60
    assert 0 < redis_client.ttl(Keys.item_features("i1")) <= 3600

    writer.batch().execute()  # an empty batch sends nothing
    again = writer.batch()
    queue_writes(again)
    again.execute()
    assert redis_client.zscore(Keys.POPULARITY, "i1") == 7.0


@pytest.mark.single_node("counts the commands one server received")
def test_against_one_server_a_batch_is_one_command_and_survives_a_script_flush(redis_client: redis.Redis) -> None:
    assert not is_cluster(redis_client)
    writer = BatchWriter(redis_client)
    redis_client.script_flush()  # a restarted or failed-over server forgets scripts: the batch loads it again
    batch = writer.batch()
    batch.hincrby(Keys.user_features("u1"), "cnt:view", 1)
    batch.execute()
    assert redis_client.hget(Keys.user_features("u1"), "cnt:view") == "1"

    redis_client.config_resetstat()
    batch = writer.batch()
    queue_writes(batch)
    batch.execute()
    stats = redis_client.info("commandstats")
    # One EVALSHA from the client; the writes ran inside it (commandstats counts those too), and no transaction.
    assert stats["cmdstat_evalsha"]["calls"] == 1 and stats["cmdstat_hincrby"]["calls"] == 1
    assert "cmdstat_multi" not in stats and "cmdstat_script" not in stats
