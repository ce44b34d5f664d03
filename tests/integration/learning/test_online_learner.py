"""Online learning: the update's math, and the learner's lock, checkpoints, publication and rollback."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import redis

from recloop.adapters.objects import ObjectStore
from recloop.adapters.redis import Keys
from recloop.core.events import Interaction
from recloop.core.settings import Settings
from recloop.learning.online.buffer import OnlineBuffer
from recloop.learning.online.checkpoints import MAX_CHECKPOINTS
from recloop.learning.online.errors import CheckpointNotFoundError, UpdateRunningError
from recloop.learning.online.learner import OnlineLearner
from recloop.learning.online.results import UpdateOutcome, UpdateResult
from recloop.learning.online.stats import UPDATE_HISTORY_LENGTH, OnlineStats
from recloop.models.bundle import ModelKind, ModelMetadata
from recloop.models.mf import MatrixFactorisation
from recloop.models.online_mf import OnlineHyperparameters, update_mf
from recloop.registry.model_registry import ModelRegistry
from tests.support.environment import TEST_BUCKET
from tests.support.learning import T0, champion, event, stream_with_new_item, trained


def contradicted(users: int = 40) -> list[Interaction]:
    """The 'a' users buy b-items, then (the held-out fifth) dislike the very same items."""
    out = []
    for u in range(0, users, 2):
        for n in range(4):
            out.append(event(f"user{u}", f"b{n}", T0 + 100_000 + u * 10 + n, "purchase"))
    for u in range(0, 10, 2):
        for n in range(4):
            out.append(event(f"user{u}", f"b{n}", T0 + 200_000 + u * 10 + n, "dislike"))
    return out


# ---- the update's math ---------------------------------------------------------------------------------


def test_a_new_item_gets_a_vector_close_to_the_items_its_users_like() -> None:
    mf, _ = trained()
    assert "a-new" not in mf.item_index
    step = update_mf(mf, stream_with_new_item(), OnlineHyperparameters(epochs=1))
    updated = step.mf
    assert step.improved and "a-new" in updated.item_index
    assert step.new_items == 1
    a_user = updated.user_factors[updated.user_index["user0"]]
    b_user = updated.user_factors[updated.user_index["user1"]]
    new_score = updated.scores(a_user, ["a-new", "b3"])
    assert new_score[0] > new_score[1]  # an 'a' user prefers the new 'a' item to a 'b' item
    assert updated.scores(b_user, ["a-new"])[0] < new_score[0]


def model_state(mf: MatrixFactorisation) -> tuple[Any, ...]:
    return (
        mf.item_factors.copy(),
        mf.user_factors.copy(),
        list(mf.item_ids),
        dict(mf.item_index),
        mf.item_gram.copy(),
        mf.user_gram.copy(),
    )


def same_state(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return all(np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y for x, y in zip(a, b, strict=True))


def test_a_kept_step_is_written_into_the_model_and_a_rejected_one_leaves_it_as_it_was() -> None:
    mf, _ = trained()
    before = model_state(mf)
    rejected = update_mf(mf, contradicted(), OnlineHyperparameters(epochs=5, learning_rate=0.01))
    assert not rejected.improved and rejected.mf is mf
    assert same_state(model_state(mf), before)  # factors, the new items' rows and ids, Grams: all undone

    kept = update_mf(mf, stream_with_new_item(), OnlineHyperparameters(epochs=3, learning_rate=0.002))
    assert kept.improved and kept.mf is mf and "a-new" in mf.item_index
    assert not np.array_equal(mf.user_factors, before[1])


def test_a_step_that_fails_while_judged_leaves_the_model_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    from recloop.models import online_mf

    mf, _ = trained()
    before = model_state(mf)
    judged = online_mf._heldout_error
    calls = []

    def fails_after_the_step(*args: Any) -> float:
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("out of memory")
        return judged(*args)

    monkeypatch.setattr(online_mf, "_heldout_error", fails_after_the_step)
    with pytest.raises(MemoryError):
        update_mf(mf, stream_with_new_item(), OnlineHyperparameters(epochs=3, learning_rate=0.002))
    assert same_state(model_state(mf), before) and "a-new" not in mf.item_index


def test_appended_items_reuse_spare_rows_and_can_be_dropped_again() -> None:
    mf, _ = trained()
    known, factors = len(mf.item_ids), mf.factors
    mf.append_items(["n1"], np.ones((1, factors)))
    storage = mf.item_factors.base
    mf.append_items(["n2", "n3"], np.full((2, factors), 2.0))
    assert mf.item_factors.base is storage  # the second append copied nothing
    assert mf.item_index["n3"] == known + 2 and mf.item_factors[known + 2, 0] == 2.0
    assert mf.scores(np.ones(factors, dtype=np.float32), ["n1"])[0] == pytest.approx(factors)
    mf.truncate_items(known + 1)
    assert mf.item_ids[-1] == "n1" and "n2" not in mf.item_index and mf.item_factors.shape == (known + 1, factors)


def test_sgd_moves_vectors_toward_the_buffered_preferences() -> None:
    """A taste change in the buffer: user0 ('a') now buys b-items; SGD raises their b scores."""
    mf, _ = trained()
    change = [event("user0", f"b{n}", T0 + 200_000 + n, "purchase") for n in range(6)] * 3
    before = mf.scores(mf.user_factors[mf.user_index["user0"]], ["b0", "b1"]).mean()
    step = update_mf(mf, change, OnlineHyperparameters(epochs=5, learning_rate=0.002))
    after = step.mf.scores(step.mf.user_factors[step.mf.user_index["user0"]], ["b0", "b1"]).mean()
    assert after > before + 0.05
    assert step.updated_users == 1


def test_held_out_error_is_judged_on_the_same_pairs_before_and_after() -> None:
    mf, _ = trained()
    events = stream_with_new_item()
    calm = update_mf(mf, events, OnlineHyperparameters(epochs=2))
    assert calm.holdout_pairs > 0 and calm.train_pairs > calm.holdout_pairs
    assert calm.improved
    # The buffer's later part contradicts its first: learning the first makes the held-out part worse.
    worse = update_mf(trained()[0], contradicted(), OnlineHyperparameters(epochs=5, learning_rate=0.01))
    assert worse.error_after > worse.error_before and not worse.improved


# ---- the learner -----------------------------------------------------------------------------------------


@pytest.fixture
def registry(aws: dict[str, Any], redis_client: redis.Redis) -> ModelRegistry:
    return ModelRegistry(ObjectStore(aws["s3"], TEST_BUCKET), redis_client)


def fill_buffer(redis_client: redis.Redis, events: list[Interaction]) -> None:
    buffer = OnlineBuffer(redis_client, Settings.from_env({}))
    for e in events:
        buffer.append_once(e)


def learner_for(
    redis_client: redis.Redis, registry: ModelRegistry, buffer_size: int = 40, **params: Any
) -> OnlineLearner:
    settings = Settings.from_env({"ONLINE_LEARNING_BUFFER_SIZE": str(buffer_size), "ONLINE_LEARNING_BATCH_SIZE": "8"})
    hyper = OnlineHyperparameters(batch_size=8, **params) if params else None
    return OnlineLearner(redis_client, registry, settings, hyper)


def test_an_update_publishes_a_child_version_and_drains_what_it_used(redis_client, registry) -> None:
    champion(registry)
    events = stream_with_new_item(40)  # 60 events, buffer size 40
    fill_buffer(redis_client, events)
    learner = learner_for(redis_client, registry)
    assert learner.buffer_full()

    result = learner.update()

    assert result.outcome is UpdateOutcome.PUBLISHED and result.events == 40
    assert result.error_after <= result.error_before
    assert redis_client.llen(Keys.ONLINE_BUFFER) == 20  # the 20 events that arrived beyond the buffer stay
    pointer = registry.champion(use_cache=False)
    assert pointer.version == result.to_version and pointer.previous_version == "mf-online-test-0"
    metadata = registry.get(result.to_version)
    assert metadata.parent_version == "mf-online-test-0" and metadata.kind is ModelKind.MF
    assert metadata.metrics["online_error_after"] == pytest.approx(result.error_after, abs=1e-6)
    assert [c.version for c in learner.checkpoints.newest_first()] == ["mf-online-test-0"]
    status = learner.status()
    assert status.total_updates == 1 and status.published == 1 and status.rollbacks == 0
    assert status.buffer_size == 20 and status.buffer_utilization == 0.5
    assert status.current_version == result.to_version
    assert status.avg_prediction_error == pytest.approx(result.error_after, abs=1e-6)
    assert status.avg_update_time_ms is not None and status.avg_update_time_ms > 0


def test_an_update_that_makes_things_worse_is_rolled_back_and_counted(redis_client, registry) -> None:
    champion(registry)
    events = contradicted()
    fill_buffer(redis_client, events)
    learner = learner_for(redis_client, registry, len(events), epochs=5, learning_rate=0.01)

    result = learner.update()

    assert result.outcome is UpdateOutcome.ROLLED_BACK and result.to_version is None
    assert result.error_after > result.error_before
    assert registry.champion(use_cache=False).version == "mf-online-test-0"
    assert [m.version for m in registry.list_versions()] == ["mf-online-test-0"]  # nothing published
    assert redis_client.llen(Keys.ONLINE_BUFFER) == 0  # the events were used, not kept for a second try
    status = learner.status()
    assert status.total_updates == 1 and status.rollbacks == 1 and status.last_outcome is UpdateOutcome.ROLLED_BACK
    (point,) = status.recent_updates
    assert point.outcome is UpdateOutcome.ROLLED_BACK and point.version is None
    assert (point.error_before, point.error_after) == (result.error_before, result.error_after)


def test_the_status_keeps_the_newest_updates_newest_first(redis_client) -> None:
    stats = OnlineStats(redis_client)
    for n in range(UPDATE_HISTORY_LENGTH + 5):
        published = UpdateResult(outcome=UpdateOutcome.PUBLISHED, events=n, to_version=f"v{n}", error_after=0.1)
        stats.record(published, now=T0 + n)
    stats.record(UpdateResult(outcome=UpdateOutcome.EMPTY), now=T0 + 999)  # nothing ran: not part of the history

    points = stats.recent_updates()

    assert len(points) == UPDATE_HISTORY_LENGTH
    assert [p.events for p in points[:2]] == [UPDATE_HISTORY_LENGTH + 4, UPDATE_HISTORY_LENGTH + 3]
    assert points[0].version == f"v{UPDATE_HISTORY_LENGTH + 4}" and points[0].at == stats.summary()["last_update_at"]


def test_one_update_at_a_time(redis_client, registry) -> None:
    champion(registry)
    fill_buffer(redis_client, stream_with_new_item(40))
    redis_client.set(Keys.ONLINE_LOCK, "someone-else", ex=60)
    learner = learner_for(redis_client, registry)
    with pytest.raises(UpdateRunningError):
        learner.update()
    assert redis_client.llen(Keys.ONLINE_BUFFER) == 60 and redis_client.get(Keys.ONLINE_LOCK) == "someone-else"
    assert learner.status().update_running is True


def test_redis_failing_before_publication_loses_no_event(redis_client, registry, monkeypatch) -> None:
    champion(registry)
    fill_buffer(redis_client, stream_with_new_item(40))
    learner = learner_for(redis_client, registry)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise redis.ConnectionError("Redis went away")

    monkeypatch.setattr(learner, "_served_newest_first", broken)
    monkeypatch.setattr(learner.checkpoints, "save", broken)
    with pytest.raises(redis.ConnectionError):
        learner.update()
    monkeypatch.undo()
    assert redis_client.llen(Keys.ONLINE_BUFFER) == 60  # nothing drained
    assert redis_client.get(Keys.ONLINE_LOCK) is None  # the lock is released for the retry
    assert learner.update().outcome is UpdateOutcome.PUBLISHED  # the retry uses the same events


def test_an_update_retried_after_its_publication_does_not_learn_the_same_events_twice(
    redis_client, registry, monkeypatch
) -> None:
    """Redis failed at the trim, after the new champion was published: the retry skips what it has learned."""
    champion(registry)
    fill_buffer(redis_client, stream_with_new_item(40))
    learner = learner_for(redis_client, registry)
    trim = learner.buffer.trim_through

    def broken(*args: Any, **kwargs: Any) -> None:
        raise redis.ConnectionError("Redis went away")

    monkeypatch.setattr(learner.buffer, "trim_through", broken)
    with pytest.raises(redis.ConnectionError):
        learner.update()
    monkeypatch.setattr(learner.buffer, "trim_through", trim)
    published = registry.champion(use_cache=False).version
    assert published != "mf-online-test-0" and redis_client.llen(Keys.ONLINE_BUFFER) == 60
    assert registry.get(published).online_position.sequence == 40

    assert learner.update().outcome is UpdateOutcome.EMPTY  # it read only what was learned, and dropped it
    assert redis_client.llen(Keys.ONLINE_BUFFER) == 20
    assert sorted(m.version for m in registry.list_versions()) == sorted(["mf-online-test-0", published])
    assert registry.champion(use_cache=False).version == published


def test_an_operators_rollback_during_an_update_stands(redis_client, registry, monkeypatch) -> None:
    """The update started from the champion it read; if that changed meanwhile, the update's result is discarded."""
    other = "mf-online-test-op"
    champion(registry, version=other)
    champion(registry)
    fill_buffer(redis_client, stream_with_new_item(40))
    learner = learner_for(redis_client, registry)
    save = learner.checkpoints.save

    def operator_promotes_meanwhile(version: str, reason: str) -> Any:
        saved = save(version, reason)
        registry.promote(other, reason="operator")
        return saved

    monkeypatch.setattr(learner.checkpoints, "save", operator_promotes_meanwhile)
    result = learner.update()
    assert result.outcome is UpdateOutcome.SUPERSEDED and result.to_version is None
    pointer = registry.champion(use_cache=False)
    assert pointer.version == other and pointer.reason == "operator"
    assert sorted(m.version for m in registry.list_versions()) == ["mf-online-test-0", other]  # no orphan
    assert redis_client.llen(Keys.ONLINE_BUFFER) == 60  # kept for an update of the operator's champion


def test_an_update_whose_publication_fails_starts_over_from_the_champion(redis_client, registry, monkeypatch) -> None:
    """The step was written into the learner's copy of the champion: the retry must not learn on top of it."""
    champion(registry)
    fill_buffer(redis_client, stream_with_new_item(40))
    learner = learner_for(redis_client, registry)
    registered: list[ModelMetadata] = []
    register = registry.register

    def s3_fails_after_register(bundle: Any) -> Any:
        registered.append(bundle.metadata)
        register(bundle)
        raise ConnectionError("S3 went away")

    monkeypatch.setattr(registry, "register", s3_fails_after_register)
    with pytest.raises(ConnectionError):
        learner.update()
    monkeypatch.undo()
    assert registry.champion(use_cache=False).version == "mf-online-test-0"
    assert redis_client.llen(Keys.ONLINE_BUFFER) == 60

    retried = learner.update()
    assert retried.outcome is UpdateOutcome.PUBLISHED and retried.from_version == "mf-online-test-0"
    assert retried.error_before == pytest.approx(registered[0].metrics["online_error_before"], abs=1e-6)
    assert retried.error_after == pytest.approx(registered[0].metrics["online_error_after"], abs=1e-6)


def test_without_a_trainable_champion_the_buffer_drains(redis_client, registry) -> None:
    fill_buffer(redis_client, stream_with_new_item(40))
    learner = learner_for(redis_client, registry)
    assert learner.update().outcome is UpdateOutcome.NO_MODEL
    assert redis_client.llen(Keys.ONLINE_BUFFER) == 20
    redis_client.delete(Keys.ONLINE_BUFFER)
    assert learner.update().outcome is UpdateOutcome.EMPTY


def test_only_the_last_ten_checkpoints_are_kept_and_rollback_restores_one(redis_client, registry, aws) -> None:
    champion(registry)
    learner = learner_for(redis_client, registry)
    published = []
    for n in range(MAX_CHECKPOINTS + 2):
        fill_buffer(redis_client, stream_with_new_item(40, f"a-new-{n}", T0 + 100_000 * (n + 1))[:40])
        result = learner.update()
        assert result.outcome is UpdateOutcome.PUBLISHED
        published.append(result.to_version)
    checkpoints = learner.checkpoints.newest_first()
    assert len(checkpoints) == MAX_CHECKPOINTS
    assert checkpoints[0].version == published[-2]  # the newest checkpoint is the version the last update replaced
    keys = aws["s3"].list_objects_v2(Bucket=TEST_BUCKET, Prefix="checkpoints/")["Contents"]
    assert len(keys) == MAX_CHECKPOINTS
    # Versions online learning made are deleted once no checkpoint names them; trained ones stay.
    assert not registry.exists(published[0]) and registry.exists(published[1])
    assert registry.exists("mf-online-test-0")

    pointer = learner.rollback()
    assert pointer.version == published[-2] and pointer.previous_version == published[-1]
    pointer = learner.rollback(published[-5])
    assert pointer.version == published[-5]
    with pytest.raises(CheckpointNotFoundError):
        learner.rollback("mf-online-test-0")  # evicted: older than the last ten
    assert learner.status().rollbacks == 2
    record = json.loads(
        aws["s3"].get_object(Bucket=TEST_BUCKET, Key=f"checkpoints/{published[-5]}.json")["Body"].read()
    )
    assert record["version"] == published[-5]


def test_batched_fold_in_solves_each_vector_exactly_as_one_at_a_time() -> None:
    from recloop.models.mf import _solve_one
    from recloop.models.online_mf import fold_in_many

    rng = np.random.default_rng(4)
    factors = rng.normal(size=(30, 6))
    gram = factors.T @ factors
    rows = rng.integers(0, 30, size=70)
    # vector 0 has one row, 1-3 a few each, 4 more than WOODBURY_ROWS; 5 of 6 has none: the zero vector
    groups = np.r_[0, rng.integers(1, 4, size=40), np.full(29, 4)]
    prefs = (rng.random(70) > 0.2).astype(float)
    confs = 1 + 20 * rng.random(70)
    batched = fold_in_many(gram, factors[rows], prefs, confs, groups=groups, count=6, reg=0.1)
    for g in range(5):
        mask = groups == g
        expected = _solve_one(gram, factors[rows[mask]], prefs[mask], confs[mask], 0.1)
        assert np.allclose(batched[g], expected)
    assert not batched[5].any()


def test_the_updated_models_gram_matrices_match_a_fresh_computation() -> None:
    mf, _ = trained()
    known = len(mf.item_ids)
    step = update_mf(mf, stream_with_new_item(), OnlineHyperparameters(epochs=3, learning_rate=0.01))
    assert step.improved
    items = step.mf.item_factors.astype(np.float64)
    users = step.mf.user_factors.astype(np.float64)
    assert np.allclose(step.mf.item_gram, items.T @ items, atol=1e-8)
    assert np.allclose(step.mf.user_gram, users.T @ users, atol=1e-8)
    assert step.mf.item_index["a-new"] == known  # appended after the model's items


def test_a_tolerance_lets_a_slightly_worse_update_through() -> None:
    mf, _ = trained()
    strict = update_mf(mf, contradicted(), OnlineHyperparameters(epochs=5, learning_rate=0.01))
    assert not strict.improved
    worse_by = strict.error_after / strict.error_before - 1
    lenient = update_mf(mf, contradicted(), OnlineHyperparameters(epochs=5, learning_rate=0.01, tolerance=worse_by * 2))
    assert lenient.improved and lenient.error_after == strict.error_after
