import pytest

from recloop.core.settings import AllocationStrategy, Settings, SettingsError


def test_defaults_are_the_guides() -> None:
    s = Settings.from_env({})
    assert s.online_learning_buffer_size == 1000
    assert s.online_learning_batch_size == 32
    assert s.online_learning_learning_rate == 0.001
    assert s.drift_threshold == 0.05
    assert s.retrain_interval_hours == 168
    assert s.min_new_interactions == 10_000
    assert s.default_allocation_strategy is AllocationStrategy.THOMPSON_SAMPLING
    assert s.default_traffic_percentage == 100.0


def test_environment_overrides_and_types_are_parsed() -> None:
    s = Settings.from_env(
        {
            "ONLINE_LEARNING_BUFFER_SIZE": "2000",
            "DEFAULT_ALLOCATION_STRATEGY": "epsilon_greedy",
            "REDIS_CLUSTER": "true",
        }
    )
    assert s.online_learning_buffer_size == 2000
    assert s.default_allocation_strategy is AllocationStrategy.EPSILON_GREEDY
    assert s.redis_cluster is True


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("ONLINE_LEARNING_BUFFER_SIZE", "lots", "ONLINE_LEARNING_BUFFER_SIZE"),
        ("DRIFT_THRESHOLD", "1.5", "DRIFT_THRESHOLD"),
        ("DEFAULT_ALLOCATION_STRATEGY", "round_robin", "DEFAULT_ALLOCATION_STRATEGY"),
        ("DEFAULT_TRAFFIC_PERCENTAGE", "120", "DEFAULT_TRAFFIC_PERCENTAGE"),
        ("POPULARITY_HALF_LIFE_HOURS", "1", "POPULARITY_HALF_LIFE_HOURS"),
        ("TRENDING_HALF_LIFE_HOURS", "0.5", "TRENDING_HALF_LIFE_HOURS"),
    ],
)
def test_bad_values_fail_with_the_variable_named(name: str, value: str, fragment: str) -> None:
    with pytest.raises(SettingsError, match=fragment):
        Settings.from_env({name: value})


def test_batch_larger_than_buffer_is_refused() -> None:
    with pytest.raises(SettingsError, match="ONLINE_LEARNING_BATCH_SIZE must not exceed"):
        Settings.from_env({"ONLINE_LEARNING_BUFFER_SIZE": "10", "ONLINE_LEARNING_BATCH_SIZE": "32"})


def test_empty_variables_mean_default() -> None:
    assert Settings.from_env({"ONLINE_LEARNING_BUFFER_SIZE": ""}).online_learning_buffer_size == 1000
