import pytest

from recloop.core.settings import AllocationStrategy, AuthMode, Settings, SettingsError


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


@pytest.mark.parametrize("url", ["redis://cache:6379/0", "rediss://cache.example:6379", "unix:///tmp/redis.sock"])
def test_redis_urls_of_every_supported_scheme_are_accepted(url: str) -> None:
    assert Settings.from_env({"REDIS_URL": url}).redis_url == url


@pytest.mark.parametrize(
    ("environ", "fragment"),
    [
        ({"REDIS_URL": "cache:6379"}, "REDIS_URL must start with redis://, rediss://, unix://"),
        ({"REDIS_URL": "http://cache:6379"}, "REDIS_URL must start with"),
        ({"REDIS_URL": "unix:///tmp/redis.sock", "REDIS_CLUSTER": "true"}, "REDIS_CLUSTER needs"),
        (
            {"REDIS_URL": "rediss://:hunter2@cache:6379", "REDIS_AUTH_SECRET_ARN": "recloop/redis"},
            "REDIS_URL must not carry credentials",
        ),
        ({"REDIS_URL": "redis://cache:6379", "REDIS_TLS_CA_FILE": __file__}, "REDIS_TLS_CA_FILE needs a rediss://"),
        (
            {"REDIS_URL": "rediss://cache:6379", "REDIS_TLS_CA_FILE": "/no/such/ca.pem"},
            "REDIS_TLS_CA_FILE is not a file",
        ),
    ],
)
def test_inconsistent_redis_settings_fail_the_cold_start(environ: dict[str, str], fragment: str) -> None:
    with pytest.raises(SettingsError, match=fragment) as failed:
        Settings.from_env(environ)
    assert "hunter2" not in str(failed.value)
    assert failed.value.__suppress_context__  # pydantic's text, which quotes the input, stays out of the traceback


def test_a_private_ca_goes_with_rediss(tmp_path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = Settings.from_env({"REDIS_URL": "rediss://cache:6379", "REDIS_TLS_CA_FILE": str(ca)})
    assert settings.redis_tls_ca_file == str(ca)


def test_authentication_is_on_unless_turned_off_by_name() -> None:
    assert Settings.from_env({}).auth_mode is AuthMode.TOKEN
    assert Settings.from_env({"AUTH_MODE": "none"}).auth_mode is AuthMode.NONE
    with pytest.raises(SettingsError, match="AUTH_MODE"):
        Settings.from_env({"AUTH_MODE": "off"})


def test_the_deduplication_window_never_ends_before_the_stream_retention_plus_a_day() -> None:
    assert Settings.from_env({}).deduplication_seconds == 48 * 3600
    assert Settings.from_env({"STREAM_RETENTION_HOURS": "168"}).deduplication_seconds == 192 * 3600
    assert Settings.from_env({"DEDUPLICATION_WINDOW_HOURS": "400"}).deduplication_seconds == 400 * 3600
