"""webhook.config: Settings.from_env() parses the environment once, and refuses bad ones."""

from __future__ import annotations

from datetime import timedelta

import pytest

from webhook.config import DEFAULT_REDIS_URL, Settings, redact_url
from webhook.errors import ConfigError

# The smallest environment production starts with; each test changes one thing.
PRODUCTION = {"APP_ENV": "production", "AGORA_CALLBACK_SECRETS": "s3cr3t-current"}
DEVELOPMENT = {"APP_ENV": "development"}


def test_production_without_a_secret_is_refused() -> None:
    env = dict(PRODUCTION)
    del env["AGORA_CALLBACK_SECRETS"]

    with pytest.raises(ConfigError, match="AGORA_CALLBACK_SECRETS"):
        Settings.from_env(env)


def test_production_with_only_blank_secrets_is_refused() -> None:
    with pytest.raises(ConfigError, match="AGORA_CALLBACK_SECRETS"):
        Settings.from_env(PRODUCTION | {"AGORA_CALLBACK_SECRETS": " , ,"})


def test_production_refuses_a_short_api_token_without_showing_it() -> None:
    # /api/v1 and the dashboard's login compare tokens unthrottled: "admin" is guessed.
    env = PRODUCTION | {"API_TOKENS": "a-long-random-ops-token-1, admin"}

    with pytest.raises(ConfigError, match="1 token\\(s\\) shorter than 16") as refused:
        Settings.from_env(env)
    assert "admin" not in str(refused.value)
    assert Settings.from_env(DEVELOPMENT | {"API_TOKENS": "admin"}).api_tokens == ("admin",)
    assert Settings.from_env(PRODUCTION | {"API_TOKENS": "x" * 16}).api_tokens == ("x" * 16,)


def test_production_is_the_default_environment() -> None:
    with pytest.raises(ConfigError, match="AGORA_CALLBACK_SECRETS"):
        Settings.from_env({})


def test_production_with_a_secret_does_not_accept_unsigned_callbacks() -> None:
    settings = Settings.from_env(PRODUCTION)

    assert settings.environment == "production"
    assert settings.callback_secrets == ("s3cr3t-current",)
    assert settings.accepts_unsigned is False


def test_development_without_a_secret_accepts_unsigned_callbacks() -> None:
    settings = Settings.from_env(DEVELOPMENT)

    assert settings.callback_secrets == ()
    assert settings.accepts_unsigned is True


def test_development_with_a_secret_still_checks_signatures() -> None:
    settings = Settings.from_env(DEVELOPMENT | {"AGORA_CALLBACK_SECRETS": "dev-secret"})

    assert settings.accepts_unsigned is False


def test_an_unknown_environment_is_refused() -> None:
    with pytest.raises(ConfigError, match="APP_ENV"):
        Settings.from_env(PRODUCTION | {"APP_ENV": "staging"})


def test_comma_separated_secrets_with_spaces_become_a_tuple_in_order() -> None:
    env = PRODUCTION | {"AGORA_CALLBACK_SECRETS": " new-secret , old-secret ,, "}

    assert Settings.from_env(env).callback_secrets == ("new-secret", "old-secret")


def test_defaults_apply_when_the_environment_is_silent() -> None:
    settings = Settings.from_env(PRODUCTION)

    assert settings.max_body_bytes == 262144
    assert settings.retention == timedelta(days=30)
    assert settings.dedupe_window == timedelta(days=7)
    assert settings.redis_url == DEFAULT_REDIS_URL == "redis://127.0.0.1:6379/0"
    assert settings.queue_name == "agora"
    assert settings.rejected_max == 1000
    assert settings.proxy_hops == 0
    assert settings.redis_timeout == timedelta(seconds=0.6)
    assert settings.storage_read_timeout == timedelta(seconds=10)


def test_production_logs_json_and_development_logs_text_by_default() -> None:
    assert Settings.from_env(PRODUCTION).log_format == "json"
    assert Settings.from_env(DEVELOPMENT).log_format == "text"


def test_routine_callbacks_are_logged_only_when_asked_for() -> None:
    assert Settings.from_env(PRODUCTION).log_callbacks == "notable"
    assert Settings.from_env(PRODUCTION | {"LOG_CALLBACKS": "ALL"}).log_callbacks == "all"
    with pytest.raises(ConfigError, match="LOG_CALLBACKS"):
        Settings.from_env(PRODUCTION | {"LOG_CALLBACKS": "some"})


def test_blank_values_mean_the_default() -> None:
    settings = Settings.from_env(PRODUCTION | {"REDIS_URL": "  ", "AGORA_MAX_BODY_BYTES": ""})

    assert settings.redis_url == DEFAULT_REDIS_URL
    assert settings.max_body_bytes == 262144


def test_values_from_the_environment_are_used() -> None:
    settings = Settings.from_env(
        PRODUCTION
        | {
            "REDIS_URL": "redis://cache:6380/2",
            "AGORA_MAX_BODY_BYTES": "65536",
            "AGORA_RETENTION_SECONDS": "86400",
            "AGORA_DEDUPE_WINDOW_SECONDS": "3600",
            "AGORA_REDIS_TIMEOUT_SECONDS": "1.5",
            "AGORA_QUEUE": "recordings",
            "AGORA_PROXY_HOPS": "1",
            "STORAGE_READ_TIMEOUT_SECONDS": "2.5",
        }
    )

    assert settings.redis_url == "redis://cache:6380/2"
    assert settings.max_body_bytes == 65536
    assert settings.retention == timedelta(days=1)
    assert settings.dedupe_window == timedelta(hours=1)
    assert settings.redis_timeout == timedelta(seconds=1.5)
    assert settings.queue_name == "recordings"
    assert settings.proxy_hops == 1
    assert settings.storage_read_timeout == timedelta(seconds=2.5)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AGORA_MAX_BODY_BYTES", "lots"),
        ("AGORA_MAX_BODY_BYTES", "1.5"),
        ("AGORA_MAX_BODY_BYTES", "100"),  # below the 1024 minimum
        ("AGORA_REJECTED_MAX", "0"),
        ("AGORA_PROXY_HOPS", "-1"),
        ("AGORA_RETENTION_SECONDS", "30d"),
        ("AGORA_RETENTION_SECONDS", "0"),
        ("AGORA_DEDUPE_WINDOW_SECONDS", "-5"),
        ("AGORA_DEDUPE_WINDOW_SECONDS", "week"),
        ("AGORA_REDIS_TIMEOUT_SECONDS", "fast"),
        ("AGORA_REDIS_TIMEOUT_SECONDS", "5"),  # two attempts must fit in Agora's 10 s
        ("STORAGE_READ_TIMEOUT_SECONDS", "0"),
        ("STORAGE_READ_TIMEOUT_SECONDS", "16"),  # three reads must fit in a job's timeout
        ("LOG_FORMAT", "xml"),
        ("REDIS_URL", "localhost:6379"),
        ("STORE_CLUSTER_URL", "http://cluster:7000"),
        # redis-py would connect to database 0 of this one: another service's data, maybe.
        ("REDIS_URL", "redis://cache:6379/notadb"),
        ("REDIS_URL", "redis://:hunter2@cache:xx/0"),  # a traceback at start, exit 3
        ("REDIS_URL", "redis://:hunter2@cache:99999/0"),
        ("REDIS_URL", "redis://cache:6379/0?db=two"),
        ("STORE_CLUSTER_URL", "redis://:hunter2@cluster:7000x"),
    ],
)
def test_a_malformed_value_is_refused_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name) as refused:
        Settings.from_env(PRODUCTION | {name: value})
    assert "hunter2" not in refused.value.message


@pytest.mark.parametrize(
    "url",
    ["redis://cache", "redis://cache:6380/", "redis://cache:6380/15", "rediss://u:p@cache:1/2",
     "unix:///run/redis.sock?db=3", "redis://cache:6379/0?db=1"],
)  # fmt: skip
def test_every_form_of_redis_url_that_redis_py_reads_is_accepted(url: str) -> None:
    assert Settings.from_env(PRODUCTION | {"REDIS_URL": url}).redis_url == url


@pytest.mark.parametrize("value", ["nan", "inf", "1e400"])
def test_a_non_finite_number_of_seconds_is_refused_as_a_config_error(value: str) -> None:
    with pytest.raises(ConfigError, match="AGORA_RETENTION_SECONDS"):
        Settings.from_env(PRODUCTION | {"AGORA_RETENTION_SECONDS": value})


# --- nothing secret in repr -------------------------------------------------------------


def test_repr_never_shows_a_callback_secret() -> None:
    env = PRODUCTION | {"AGORA_CALLBACK_SECRETS": "s3cr3t-current,s3cr3t-previous"}

    text = repr(Settings.from_env(env))

    assert "s3cr3t" not in text
    assert "2 secret(s)" in text


def test_repr_never_shows_the_redis_password() -> None:
    settings = Settings.from_env(PRODUCTION | {"REDIS_URL": "redis://:hunter2@cache:6379/0"})

    text = repr(settings)

    assert "hunter2" not in text
    assert "cache:6379/0" in text


def test_str_is_as_discreet_as_repr() -> None:
    settings = Settings.from_env(PRODUCTION | {"REDIS_URL": "redis://:hunter2@cache:6379/0"})

    assert "hunter2" not in str(settings)
    assert "s3cr3t" not in str(settings)


def test_repr_never_shows_a_redis_password_given_as_a_query_argument() -> None:
    settings = Settings.from_env(
        PRODUCTION | {"REDIS_URL": "redis://cache:6379/0?password=hunter2"}
    )

    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("redis://:pw@host:6379/0", "redis://***@host:6379/0"),
        ("redis://user:pw@host:6379/0", "redis://user:***@host:6379/0"),
        ("rediss://user:p@ss@host:6380/1", "rediss://user:***@host:6380/1"),
        ("unix://:pw@/run/redis.sock?db=0", "unix://***@/run/redis.sock?db=0"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("not a url", "not a url"),
    ],
)
def test_redact_url_replaces_only_the_password(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


class TestRedisTopology:
    def test_sentinels_are_host_port_pairs_with_the_primary_they_watch(self) -> None:
        settings = Settings.from_env(PRODUCTION | {
            "REDIS_SENTINELS": "10.0.0.1:26379, sentinel-b:26380,[::1]:26381",
            "REDIS_SENTINEL_MASTER": "agora",
        })  # fmt: skip

        assert settings.redis_sentinels == (
            ("10.0.0.1", 26379), ("sentinel-b", 26380), ("::1", 26381)
        )  # fmt: skip
        assert settings.redis_sentinel_master == "agora"

    @pytest.mark.parametrize("value", ["sentinel-a", "a:b", "a:0", ":26379", "a:70000"])
    def test_a_malformed_sentinel_address_is_refused(self, value: str) -> None:
        with pytest.raises(ConfigError, match="REDIS_SENTINELS"):
            Settings.from_env(PRODUCTION | {"REDIS_SENTINELS": value,
                                            "REDIS_SENTINEL_MASTER": "agora"})  # fmt: skip

    def test_sentinels_without_the_primary_name_are_refused(self) -> None:
        with pytest.raises(ConfigError, match="REDIS_SENTINEL_MASTER"):
            Settings.from_env(PRODUCTION | {"REDIS_SENTINELS": "a:26379"})

    def test_waiting_for_replicas_is_off_by_default_and_bounded(self) -> None:
        assert Settings.from_env(PRODUCTION).store_min_replicas == 0
        wait = Settings.from_env(
            PRODUCTION
            | {"AGORA_STORE_MIN_REPLICAS": "1", "AGORA_STORE_REPLICA_TIMEOUT_SECONDS": "0.2"}
        )
        assert (wait.store_min_replicas, wait.store_replica_timeout) == (
            1, timedelta(milliseconds=200)
        )  # fmt: skip
        with pytest.raises(ConfigError, match="AGORA_STORE_REPLICA_TIMEOUT_SECONDS"):
            Settings.from_env(PRODUCTION | {"AGORA_STORE_REPLICA_TIMEOUT_SECONDS": "3"})


def test_a_malformed_redis_url_is_refused_without_its_password() -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(PRODUCTION | {"REDIS_URL": "redis:/user:hunter2@host:6379"})

    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize("url", ["redis://h:6379/0", "rediss://u:p@h:6380", "unix:///run/r.sock"])
def test_every_redis_url_scheme_redis_py_knows_is_accepted(url: str) -> None:
    assert Settings.from_env(PRODUCTION | {"REDIS_URL": url}).redis_url == url
