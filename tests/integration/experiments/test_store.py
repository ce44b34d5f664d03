"""Experiment definitions over moto S3 and a real Redis: round trips, listing, and the running experiments' cache."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from recloop.adapters.objects import ObjectStore
from recloop.adapters.redis import Keys
from recloop.core.errors import ConflictError
from recloop.core.settings import AllocationStrategy
from recloop.experiments.model import Experiment, ExperimentStatus, Variant
from recloop.experiments.store import ExperimentNotFoundError, ExperimentStore, experiment_key
from tests.support.environment import TEST_BUCKET


def an_experiment(experiment_id: str, created_at: str = "2026-11-27T12:00:00+00:00", **fields: Any) -> Experiment:
    return Experiment(
        experiment_id=experiment_id,
        name=f"test {experiment_id}",
        variants=[
            Variant(variant_id="var_0", name="champion", model_version="pop-1"),
            Variant(variant_id="var_1", name="challenger", model_version="pop-2"),
        ],
        allocation_strategy=AllocationStrategy.FIXED_SPLIT,
        traffic_percentage=50.0,
        created_at=created_at,
        **fields,
    )


@pytest.fixture
def objects(aws: dict[str, Any]) -> ObjectStore:
    return ObjectStore(aws["s3"], TEST_BUCKET)


@pytest.fixture
def store(objects: ObjectStore, redis_client: redis.Redis) -> ExperimentStore:
    return ExperimentStore(objects, redis_client, running_cache_seconds=60)


def test_an_experiment_round_trips_through_s3(store: ExperimentStore, aws: dict[str, Any]) -> None:
    experiment = an_experiment("exp_000000000001", description="mf against lgbm")
    store.create(experiment)

    assert store.get("exp_000000000001") == experiment
    stored = aws["s3"].get_object(Bucket=TEST_BUCKET, Key="experiments/exp_000000000001.json")["Body"].read()
    assert Experiment.model_validate_json(stored) == experiment


def test_an_id_is_never_created_twice(store: ExperimentStore) -> None:
    store.create(an_experiment("exp_000000000001"))
    with pytest.raises(ConflictError):
        store.create(an_experiment("exp_000000000001", description="another"))
    assert store.get("exp_000000000001").description == ""


@pytest.mark.parametrize("experiment_id", ["exp_000000000009", "exp_../models/champion", "EXP_000000000001", ""])
def test_an_unknown_or_malformed_id_is_not_found(store: ExperimentStore, experiment_id: str) -> None:
    store.create(an_experiment("exp_000000000001"))
    with pytest.raises(ExperimentNotFoundError) as raised:
        store.get(experiment_id)
    assert raised.value.details == {"experiment_id": experiment_id}


def test_list_is_newest_first_and_skips_what_is_not_an_experiment(store: ExperimentStore, objects: ObjectStore) -> None:
    store.create(an_experiment("exp_000000000001", created_at="2026-11-01T00:00:00+00:00"))
    store.create(an_experiment("exp_000000000002", created_at="2026-11-03T00:00:00+00:00"))
    store.create(an_experiment("exp_000000000003", created_at="2026-11-02T00:00:00+00:00"))
    objects.put(experiment_key("exp_00000000000f"), b"{not json")  # unreadable: logged, left out
    objects.put("experiments/notes.txt", b"an operator's file")

    assert [e.experiment_id for e in store.list()] == ["exp_000000000002", "exp_000000000003", "exp_000000000001"]


def test_running_lists_only_running_experiments(store: ExperimentStore) -> None:
    store.create(an_experiment("exp_000000000001"))
    store.create(an_experiment("exp_000000000002", status=ExperimentStatus.RUNNING))
    store.create(an_experiment("exp_000000000003", status=ExperimentStatus.STOPPED))

    assert [e.experiment_id for e in store.running()] == ["exp_000000000002"]


def test_running_is_served_from_the_cache_until_a_change_clears_it(
    store: ExperimentStore, objects: ObjectStore, redis_client: redis.Redis
) -> None:
    draft = store.create(an_experiment("exp_000000000001"))
    assert store.running() == []
    assert redis_client.pttl(Keys.RUNNING_EXPERIMENTS) > 0

    # Written behind the store's back (another writer without the cache): the cache still answers.
    running = draft.model_copy(update={"status": ExperimentStatus.RUNNING})
    objects.put(experiment_key(running.experiment_id), running.model_dump_json().encode())
    assert store.running() == []
    assert store.running(use_cache=False) == [running]

    # A change through any store (another Lambda instance) clears the cache for every reader at once.
    other_instance = ExperimentStore(objects, redis_client, running_cache_seconds=60)
    assert store.running() == [running]
    stopped = running.model_copy(update={"status": ExperimentStatus.STOPPED})
    assert other_instance.replace(stopped, other_instance.read("exp_000000000001")[1])
    assert store.running() == []
    assert store.get("exp_000000000001").status == ExperimentStatus.STOPPED


def test_the_cache_expires_on_its_own(objects: ObjectStore, redis_client: redis.Redis) -> None:
    store = ExperimentStore(objects, redis_client, running_cache_seconds=0.05)
    store.create(an_experiment("exp_000000000001"))
    assert store.running() == []
    running = store.get("exp_000000000001").model_copy(update={"status": ExperimentStatus.RUNNING})
    objects.put(experiment_key(running.experiment_id), running.model_dump_json().encode())
    assert store.running() == []
    time.sleep(0.1)
    assert store.running() == [running]


def test_without_redis_s3_answers(objects: ObjectStore) -> None:
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    store = ExperimentStore(objects, dead)
    store.create(an_experiment("exp_000000000001", status=ExperimentStatus.RUNNING))  # a failed cache clear: no error
    assert [e.experiment_id for e in store.running()] == ["exp_000000000001"]


def test_a_change_made_from_a_stale_read_is_refused(store: ExperimentStore) -> None:
    """Two requests that read the same experiment: the first to write wins, the other must read again."""
    store.create(an_experiment("exp_000000000001"))
    first, first_etag = store.read("exp_000000000001")
    second, second_etag = store.read("exp_000000000001")
    assert store.replace(first.model_copy(update={"status": ExperimentStatus.RUNNING}), first_etag)
    assert not store.replace(second.model_copy(update={"status": ExperimentStatus.STOPPED}), second_etag)
    assert store.get("exp_000000000001").status == ExperimentStatus.RUNNING


def test_the_serving_slot_is_claimed_by_one_of_two_racing_claims(store: ExperimentStore) -> None:
    assert store.slot() == (None, None)
    assert store.claim_slot("exp_000000000001", None)
    assert not store.claim_slot("exp_000000000002", None)  # both read "never claimed"; the second write loses
    claim, etag = store.slot()
    assert claim is not None and claim.experiment_id == "exp_000000000001"
    assert store.claim_slot("exp_000000000002", etag)
    assert not store.claim_slot("exp_000000000003", etag)
