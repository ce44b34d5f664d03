"""The model registry over moto S3 and a real Redis: immutable versions, guarded promotion, rollback, cache."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from recloop.adapters.objects import ObjectStore
from recloop.adapters.redis import Keys
from recloop.models.bundle import METADATA_FILE, CorruptModelError, DataWindow, ModelBundle, ModelKind
from recloop.models.loading import LOADERS
from recloop.registry.champion import POINTER_KEY, ChampionPointer
from recloop.registry.errors import (
    InvalidVersionError,
    ModelNotFoundError,
    NoPreviousVersionError,
    VersionExistsError,
    VersionInUseError,
)
from recloop.registry.model_registry import ModelRegistry
from recloop.registry.versions import new_version_id
from tests.support.environment import TEST_BUCKET
from tests.support.registry import fake_popularity_loader, make_bundle, s3_pointer


@pytest.fixture
def loaders(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tiny loader for `popularity`; no loader for `lgbm` (an incompatible kind). Restored afterwards."""
    monkeypatch.setitem(LOADERS, ModelKind.POPULARITY, fake_popularity_loader)
    monkeypatch.delitem(LOADERS, ModelKind.LGBM, raising=False)


@pytest.fixture
def registry(aws: dict[str, Any], redis_client: redis.Redis, loaders: None) -> ModelRegistry:
    return ModelRegistry(ObjectStore(aws["s3"], TEST_BUCKET), redis_client, pointer_cache_seconds=5.0)


def stored_keys(s3: Any, prefix: str = "models/") -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=TEST_BUCKET, Prefix=prefix).get("Contents", []))


class RecordingS3:
    """The moto client, with every put recorded and an optional hook run before each put."""

    def __init__(self, client: Any, before_put: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.client = client
        self.puts: list[str] = []
        self.before_put = before_put

    def put_object(self, **kwargs: Any) -> Any:
        if self.before_put:
            self.before_put(kwargs)
        self.puts.append(kwargs["Key"])
        return self.client.put_object(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


# ---- versions -----------------------------------------------------------------------------------------------


def test_register_list_get_load_round_trip(aws: dict, registry: ModelRegistry) -> None:
    older = make_bundle("pop-1", created_at="2026-11-01T00:00:00+00:00", metrics={"hit_rate": 0.1})
    newer = make_bundle("mf-2", kind=ModelKind.MF, created_at="2026-11-02T00:00:00+00:00", parent_version="pop-1")
    assert registry.register(older).version == "pop-1"
    registry.register(newer)

    assert stored_keys(aws["s3"]) == [
        "models/mf-2/items.json",
        "models/mf-2/metadata.json",
        "models/mf-2/vectors/items.bin",
        "models/pop-1/items.json",
        "models/pop-1/metadata.json",
        "models/pop-1/vectors/items.bin",
    ]
    assert [m.version for m in registry.list_versions()] == ["mf-2", "pop-1"]

    metadata = registry.get("pop-1")
    assert metadata.kind is ModelKind.POPULARITY and metadata.metrics == {"hit_rate": 0.1}
    assert set(metadata.files) == {"items.json", "vectors/items.bin"}
    assert registry.get("mf-2").parent_version == "pop-1"

    loaded = registry.load("pop-1")
    assert loaded.files == older.files
    assert loaded.metadata == older.metadata
    assert registry.exists("pop-1") and not registry.exists("pop-9")


def test_metadata_is_written_last(aws: dict, loaders: None) -> None:
    s3 = RecordingS3(aws["s3"])
    ModelRegistry(ObjectStore(s3, TEST_BUCKET)).register(make_bundle("pop-1"))
    assert s3.puts[-1] == f"models/pop-1/{METADATA_FILE}"
    assert sorted(s3.puts[:-1]) == ["models/pop-1/items.json", "models/pop-1/vectors/items.bin"]


def test_versions_are_immutable(aws: dict, registry: ModelRegistry) -> None:
    registry.register(make_bundle("pop-1", items=["a"]))
    before = {key: aws["s3"].get_object(Bucket=TEST_BUCKET, Key=key)["Body"].read() for key in stored_keys(aws["s3"])}

    with pytest.raises(VersionExistsError, match="pop-1"):
        registry.register(make_bundle("pop-1", items=["a"]))
    with pytest.raises(VersionExistsError, match="pop-1"):
        registry.register(make_bundle("pop-1", items=["z"]))

    after = {key: aws["s3"].get_object(Bucket=TEST_BUCKET, Key=key)["Body"].read() for key in stored_keys(aws["s3"])}
    assert after == before
    assert registry.load("pop-1").files["items.json"] == json.dumps({"items": ["a"]}).encode()


def test_half_written_version_is_invisible_and_completed_by_a_retry(aws: dict, registry: ModelRegistry) -> None:
    bundle = make_bundle("pop-1")
    aws["s3"].put_object(Bucket=TEST_BUCKET, Key="models/pop-1/items.json", Body=bundle.files["items.json"])

    assert registry.list_versions() == []
    with pytest.raises(ModelNotFoundError):
        registry.get("pop-1")

    registry.register(bundle)  # the same bytes: the crashed write is completed
    assert [m.version for m in registry.list_versions()] == ["pop-1"]

    other = make_bundle("pop-2")
    aws["s3"].put_object(Bucket=TEST_BUCKET, Key="models/pop-2/items.json", Body=b"someone else's bytes")
    with pytest.raises(VersionExistsError, match="different content"):
        registry.register(other)
    assert not registry.exists("pop-2")


@pytest.mark.parametrize("version", ["", "../pop", "a/b", "_history", "-x", "x" * 129, "sp ace"])
def test_invalid_version_ids_are_refused(registry: ModelRegistry, version: str) -> None:
    with pytest.raises(InvalidVersionError):
        registry.register(make_bundle(version))
    with pytest.raises(InvalidVersionError):
        registry.get(version)
    with pytest.raises(InvalidVersionError):
        registry.promote(version, "nope")


def test_unknown_version_is_not_found(registry: ModelRegistry) -> None:
    for call in (registry.get, registry.load, lambda v: registry.promote(v, "why not")):
        with pytest.raises(ModelNotFoundError, match="mf-missing") as info:
            call("mf-missing")
        assert info.value.version == "mf-missing"
    assert registry.champion() is None


def test_new_version_id_is_sortable_and_unique() -> None:
    version = new_version_id(ModelKind.MF)
    assert re.fullmatch(r"mf-\d{8}T\d{6}Z-[0-9a-f]{6}", version)
    assert new_version_id("lgbm").startswith("lgbm-")
    assert len({new_version_id("popularity") for _ in range(200)}) == 200


# ---- promotion and rollback ---------------------------------------------------------------------------------


def test_promote_records_previous_and_rollback_returns_to_it(aws: dict, registry: ModelRegistry) -> None:
    for version in ("pop-1", "pop-2"):
        registry.register(make_bundle(version))

    first = registry.promote("pop-1", "bootstrap")
    assert (first.version, first.previous_version, first.reason) == ("pop-1", None, "bootstrap")
    second = registry.promote("pop-2", "beat the champion on holdout")
    assert (second.version, second.previous_version) == ("pop-2", "pop-1")
    assert s3_pointer(aws["s3"]) == second

    back = registry.rollback("hit rate dropped")
    assert (back.version, back.previous_version, back.reason) == ("pop-1", "pop-2", "hit rate dropped")
    assert registry.champion() == back == s3_pointer(aws["s3"])

    again = registry.rollback("the drop was a tracking outage")  # a second rollback undoes the first
    assert (again.version, again.previous_version) == ("pop-2", "pop-1")

    actions = [(r["action"], r["version"]) for r in registry.history()]
    assert actions == [("rollback", "pop-2"), ("rollback", "pop-1"), ("promote", "pop-2"), ("promote", "pop-1")]


def test_promoting_the_champion_again_changes_nothing(registry: ModelRegistry) -> None:
    registry.register(make_bundle("pop-1"))
    registry.register(make_bundle("pop-2"))
    registry.promote("pop-1", "first")
    pointer = registry.promote("pop-2", "second")
    assert registry.promote("pop-2", "retry of the same step") == pointer


def test_rollback_without_a_previous_version_is_refused(aws: dict, registry: ModelRegistry) -> None:
    with pytest.raises(NoPreviousVersionError, match="no champion"):
        registry.rollback("nothing to roll back")
    registry.register(make_bundle("pop-1"))
    registry.promote("pop-1", "first ever")
    with pytest.raises(NoPreviousVersionError, match="pop-1"):
        registry.rollback("nowhere to go")
    assert s3_pointer(aws["s3"]).version == "pop-1"


TAMPERINGS = {
    "altered file": lambda s3: s3.put_object(Bucket=TEST_BUCKET, Key="models/bad-1/items.json", Body=b'{"x": 1}'),
    "deleted file": lambda s3: s3.delete_object(Bucket=TEST_BUCKET, Key="models/bad-1/vectors/items.bin"),
    "unreadable metadata": lambda s3: s3.put_object(Bucket=TEST_BUCKET, Key="models/bad-1/metadata.json", Body=b"{"),
}


@pytest.mark.parametrize("tamper", TAMPERINGS.values(), ids=TAMPERINGS.keys())
def test_corrupt_version_is_refused_and_champion_unchanged(
    aws: dict, registry: ModelRegistry, redis_client: redis.Redis, tamper: Callable[[Any], None]
) -> None:
    registry.register(make_bundle("good-1"))
    registry.register(make_bundle("bad-1"))
    champion = registry.promote("good-1", "baseline")
    tamper(aws["s3"])

    with pytest.raises(CorruptModelError, match="bad-1"):
        registry.promote("bad-1", "should never serve")
    assert s3_pointer(aws["s3"]) == champion
    assert registry.champion() == champion
    assert ChampionPointer.model_validate_json(redis_client.get(Keys.CHAMPION_CACHE)) == champion
    assert [r["version"] for r in registry.history()] == ["good-1"]


def test_altered_file_fails_load(aws: dict, registry: ModelRegistry) -> None:
    registry.register(make_bundle("pop-1"))
    aws["s3"].put_object(Bucket=TEST_BUCKET, Key="models/pop-1/vectors/items.bin", Body=bytes(64))
    with pytest.raises(CorruptModelError, match="checksum"):
        registry.load("pop-1")


INCOMPATIBLE = {
    "kind without a loader": make_bundle("new-1", kind=ModelKind.LGBM),
    "loader raises": make_bundle("new-1", broken=True),
    "unknown bundle format": make_bundle("new-1", format=2),
}


@pytest.mark.parametrize("bundle", INCOMPATIBLE.values(), ids=INCOMPATIBLE.keys())
def test_incompatible_version_is_refused(aws: dict, registry: ModelRegistry, bundle: ModelBundle) -> None:
    registry.register(make_bundle("old-1"))
    registry.register(bundle)
    champion = registry.promote("old-1", "baseline")

    with pytest.raises(CorruptModelError):
        registry.promote("new-1", "try it")
    assert s3_pointer(aws["s3"]) == champion == registry.champion()


def test_rollback_to_a_version_that_no_longer_loads_is_refused(aws: dict, registry: ModelRegistry) -> None:
    registry.register(make_bundle("pop-1"))
    registry.register(make_bundle("pop-2"))
    registry.promote("pop-1", "first")
    current = registry.promote("pop-2", "second")
    aws["s3"].delete_object(Bucket=TEST_BUCKET, Key="models/pop-1/items.json")
    with pytest.raises(CorruptModelError, match="pop-1"):
        registry.rollback("back")
    assert s3_pointer(aws["s3"]) == current


def test_concurrent_promotion_keeps_the_previous_version_accurate(aws: dict, loaders: None) -> None:
    """Another promotion lands between this one's read and write: the ETag check makes it re-read."""
    setup = ModelRegistry(ObjectStore(aws["s3"], TEST_BUCKET))
    for version in ("pop-1", "pop-2", "pop-3"):
        setup.register(make_bundle(version))
    setup.promote("pop-1", "first")

    def competitor(put: dict[str, Any]) -> None:
        if put["Key"] == POINTER_KEY and not competitor.done:  # type: ignore[attr-defined]
            competitor.done = True  # type: ignore[attr-defined]
            setup.promote("pop-2", "someone else")

    competitor.done = False  # type: ignore[attr-defined]
    pointer = ModelRegistry(ObjectStore(RecordingS3(aws["s3"], competitor), TEST_BUCKET)).promote("pop-3", "mine")
    assert (pointer.version, pointer.previous_version) == ("pop-3", "pop-2")
    assert s3_pointer(aws["s3"]) == pointer


# ---- the champion cache -------------------------------------------------------------------------------------


def test_champion_is_cached_in_redis_and_refreshed_by_promote(
    aws: dict, registry: ModelRegistry, redis_client: redis.Redis
) -> None:
    assert registry.champion() is None
    assert redis_client.get(Keys.CHAMPION_CACHE) == "none"  # "no champion yet" is cached too

    registry.register(make_bundle("pop-1"))
    registry.register(make_bundle("pop-2"))
    first = registry.promote("pop-1", "first")
    assert ChampionPointer.model_validate_json(redis_client.get(Keys.CHAMPION_CACHE)) == first
    assert 0 < redis_client.pttl(Keys.CHAMPION_CACHE) <= 5000

    # A pointer written behind the registry's back is seen once the cache entry expires (or when asked fresh).
    outside = ChampionPointer(version="pop-2", previous_version="pop-1", reason="written elsewhere")
    aws["s3"].put_object(Bucket=TEST_BUCKET, Key=POINTER_KEY, Body=outside.model_dump_json().encode())
    assert registry.champion() == first
    assert registry.champion(use_cache=False) == outside
    assert registry.champion() == outside  # the fresh read refreshed the cache

    promoted = registry.promote("pop-1", "back again")
    assert registry.champion() == promoted
    assert ChampionPointer.model_validate_json(redis_client.get(Keys.CHAMPION_CACHE)) == promoted


def test_cache_entry_expires(aws: dict, redis_client: redis.Redis, loaders: None) -> None:
    registry = ModelRegistry(ObjectStore(aws["s3"], TEST_BUCKET), redis_client, pointer_cache_seconds=0.05)
    registry.register(make_bundle("pop-1"))
    registry.promote("pop-1", "first")
    time.sleep(0.1)
    assert redis_client.get(Keys.CHAMPION_CACHE) is None
    assert registry.champion().version == "pop-1"
    assert redis_client.get(Keys.CHAMPION_CACHE) is not None


def test_registry_works_without_redis_and_when_redis_is_down(aws: dict, loaders: None) -> None:
    ModelRegistry(ObjectStore(aws["s3"], TEST_BUCKET)).register(make_bundle("pop-1"))
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    for client in (None, dead):
        registry = ModelRegistry(ObjectStore(aws["s3"], TEST_BUCKET), client)
        assert registry.promote("pop-1", "no cache").version == "pop-1"
        assert registry.champion().version == "pop-1"


def test_a_version_can_be_deleted_unless_serving_or_the_rollback_target(registry: ModelRegistry, aws) -> None:
    for version in ("v-1", "v-2", "v-3"):
        registry.register(make_bundle(version))
    registry.promote("v-1")
    registry.promote("v-2")
    with pytest.raises(VersionInUseError):
        registry.delete("v-2")  # the champion
    with pytest.raises(VersionInUseError):
        registry.delete("v-1")  # what a rollback returns to
    registry.delete("v-3")
    assert not registry.exists("v-3") and stored_keys(aws["s3"], "models/v-3/") == []
    with pytest.raises(ModelNotFoundError):
        registry.delete("v-3")


def test_a_champion_is_judged_as_it_stood_before_a_moment(registry: ModelRegistry) -> None:
    """A retrain's holdout begins at 250: the champion pop-3 learned from it online, its parent pop-2 did not."""
    lineage = [("pop-1", None, 100.0), ("pop-2", "pop-1", 200.0), ("pop-3", "pop-2", 300.0)]
    for version, parent, end in lineage:
        registry.register(make_bundle(version, parent_version=parent, data_window=DataWindow(start=0.0, end=end)))
    assert registry.as_it_stood("pop-3", 250.0) == "pop-2"
    assert registry.as_it_stood("pop-3", 200.0) == "pop-1"  # pop-2 learned an event at 200: not before it
    assert registry.as_it_stood("pop-3", 301.0) == "pop-3"
    assert registry.as_it_stood("pop-3", None) == "pop-3"  # no holdout
    # No ancestor old enough, or a lineage broken by a deleted parent: the version itself.
    assert registry.as_it_stood("pop-3", 50.0) == "pop-3"
    registry.delete("pop-2")
    assert registry.as_it_stood("pop-3", 250.0) == "pop-3"
