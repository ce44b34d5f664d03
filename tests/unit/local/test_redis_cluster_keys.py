"""How the product's Redis keys (adapters.redis.Keys) spread over a 3-primary cluster's slots: per-user and per-item
keys evenly, and only the known global keys on one slot whatever the number of users and items."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from local.redis_cluster import even_slot_ranges, key_spread, parse_cluster_nodes, slot_arguments
from recloop.adapters.redis import Keys

# The keys every instance shares: one slot each, by design (a script or transaction spans a group of them).
GLOBAL_KEYS = {
    "POPULARITY", "CATALOG", "DECAY", "COUNTERS", "LATENCY_ENDPOINTS", "CHAMPION_CACHE", "MODEL_STATUS",
    "ONLINE_BUFFER", "ONLINE_LOCK", "ONLINE_STATS", "ONLINE_UPDATES", "ONLINE_SEQUENCE", "ONLINE_CONSUMED",
    "ONLINE_BUFFER_ID", "SERVED_FEATURES", "RUNNING_EXPERIMENTS", "RETRAIN_LOCK", "RETRAIN_STATUS",
    "RETRAIN_NEW_INTERACTIONS", "RETRAIN_RUNS", "POPULARITY_RESCALED",
    # One claim per buffered event, all in {olb} beside the buffer (the append-once script needs both): a keyspace
    # on one slot that grows with the events of the de-duplication window.
    "online_buffer_event",
}  # fmt: skip


@pytest.fixture(scope="module")
def spread() -> dict:
    # 200,000 users and items: the shares are within 0.5 % of even long before 1M (`python -m local.redis_cluster
    # --slots` reports the 1M case, in about 15 s).
    return key_spread(users=200_000, items=200_000)


def test_per_user_and_per_item_keys_spread_evenly_over_the_primaries(spread: dict) -> None:
    assert spread["keys"] == 200_000 * (len(spread["per_user_keys"]) + len(spread["per_item_keys"]))
    assert spread["max_deviation_from_even"] < 0.02  # each primary within 2 % of a third
    assert sum(spread["share_per_primary"]) == pytest.approx(1.0)
    slots = spread["keys_per_slot"]
    assert slots["min"] > 0 and slots["max"] < 2 * slots["mean"]  # no slot of users or items is hot


def test_only_the_known_global_keys_sit_on_one_slot(spread: dict) -> None:
    assert set(spread["single_slot"]) == GLOBAL_KEYS
    # Every key of a user (an item, an experiment, a drift window) follows its id: one hash tag each.
    arguments = slot_arguments()
    assert {name for name, deciding in arguments.items() if deciding == ("user_id",)} == {
        "user_features", "user_items", "user_recent", "user_event_seen", "recommendation_log",
        "user_experiment_impressions",
    }  # fmt: skip
    assert {name for name, deciding in arguments.items() if deciding == ("item_id",)} == {
        "item_features",
        "item_cooccurrence",
    }
    assert key_slot(Keys.user_event_seen("u", "e1").encode()) == key_slot(Keys.user_features("u").encode())


def test_the_slot_ranges_are_those_a_new_cluster_gets() -> None:
    assert even_slot_ranges(3) == [(0, 5460), (5461, 10922), (10923, 16383)]


def test_cluster_nodes_lines_parse_into_roles_and_slots() -> None:
    text = (
        "a1 127.0.0.1:10001@20001 myself,master - 0 0 1 connected 0-5460\n"
        "b2 127.0.0.1:10002@20002 slave a1 0 1 1 connected\n"
        "c3 127.0.0.1:10003@20003 master,fail - 0 1 2 disconnected 5461 5462-10922 [5463->-x]\n"
    )
    primary, replica, failed = parse_cluster_nodes(text)
    assert (primary.port, primary.role, primary.slots, primary.failed) == (10001, "primary", ((0, 5460),), False)
    assert (replica.role, replica.primary_id, replica.slot_count) == ("replica", "a1", 0)
    assert failed.failed and failed.slots == ((5461, 5461), (5462, 10922)) and failed.slot_count == 5462
