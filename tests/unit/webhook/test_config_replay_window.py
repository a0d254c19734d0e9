"""Settings.from_env: the notifyMs age window, and the dedupe window that must cover it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from webhook.config import Settings
from webhook.errors import ConfigError

PRODUCTION = {"APP_ENV": "production", "AGORA_CALLBACK_SECRETS": "s3cr3t-current"}
DEVELOPMENT = {"APP_ENV": "development"}


def test_production_checks_a_day_with_five_minutes_of_skew_by_default() -> None:
    settings = Settings.from_env(PRODUCTION)

    assert settings.max_notify_age == timedelta(days=1)
    assert settings.notify_clock_skew == timedelta(minutes=5)


def test_development_does_not_check_by_default() -> None:
    # Saved examples and recorded traffic must go through a local instance as they are.
    assert Settings.from_env(DEVELOPMENT).max_notify_age is None


@pytest.mark.parametrize("off", ["0", "0.0", " 0 "])
def test_zero_switches_the_check_off(off: str) -> None:
    assert (
        Settings.from_env(PRODUCTION | {"AGORA_MAX_NOTIFY_AGE_SECONDS": off}).max_notify_age is None
    )


def test_explicit_values_are_used_in_either_environment() -> None:
    env = {"AGORA_MAX_NOTIFY_AGE_SECONDS": "900", "AGORA_NOTIFY_CLOCK_SKEW_SECONDS": "30"}

    for base in (PRODUCTION, DEVELOPMENT):
        settings = Settings.from_env(base | env)
        assert settings.max_notify_age == timedelta(minutes=15)
        assert settings.notify_clock_skew == timedelta(seconds=30)


@pytest.mark.parametrize("base", [PRODUCTION, DEVELOPMENT], ids=["production", "development"])
def test_a_dedupe_window_shorter_than_age_plus_skew_is_refused(base: dict[str, str]) -> None:
    env = base | {
        "AGORA_MAX_NOTIFY_AGE_SECONDS": "3600",
        "AGORA_NOTIFY_CLOCK_SKEW_SECONDS": "300",
        "AGORA_DEDUPE_WINDOW_SECONDS": "3899",
    }

    with pytest.raises(ConfigError) as refused:
        Settings.from_env(env)

    message = str(refused.value)
    for name in (
        "AGORA_DEDUPE_WINDOW_SECONDS",
        "AGORA_MAX_NOTIFY_AGE_SECONDS",
        "AGORA_NOTIFY_CLOCK_SKEW_SECONDS",
    ):
        assert name in message
    assert refused.value.reason == "invalid_configuration"


def test_a_dedupe_window_exactly_covering_age_plus_skew_is_enough() -> None:
    env = PRODUCTION | {
        "AGORA_MAX_NOTIFY_AGE_SECONDS": "3600",
        "AGORA_NOTIFY_CLOCK_SKEW_SECONDS": "300",
        "AGORA_DEDUPE_WINDOW_SECONDS": "3900",
    }

    settings = Settings.from_env(env)

    assert settings.max_notify_age is not None
    assert settings.dedupe_window == settings.max_notify_age + settings.notify_clock_skew


def test_a_longer_skew_needs_a_longer_dedupe_window() -> None:
    env = PRODUCTION | {
        "AGORA_MAX_NOTIFY_AGE_SECONDS": "86400",
        "AGORA_NOTIFY_CLOCK_SKEW_SECONDS": "604800",
    }

    with pytest.raises(ConfigError, match="AGORA_NOTIFY_CLOCK_SKEW_SECONDS"):
        Settings.from_env(env)


def test_the_default_age_gives_way_to_a_shorter_dedupe_window() -> None:
    settings = Settings.from_env(PRODUCTION | {"AGORA_DEDUPE_WINDOW_SECONDS": "3600"})

    assert settings.max_notify_age == timedelta(minutes=55)
    assert settings.max_notify_age + settings.notify_clock_skew == settings.dedupe_window


def test_a_dedupe_window_within_the_skew_leaves_no_default_age() -> None:
    with pytest.raises(ConfigError, match="AGORA_DEDUPE_WINDOW_SECONDS"):
        Settings.from_env(PRODUCTION | {"AGORA_DEDUPE_WINDOW_SECONDS": "300"})


def test_with_the_check_off_any_dedupe_window_goes() -> None:
    env = PRODUCTION | {"AGORA_MAX_NOTIFY_AGE_SECONDS": "0", "AGORA_DEDUPE_WINDOW_SECONDS": "60"}

    assert Settings.from_env(env).dedupe_window == timedelta(minutes=1)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AGORA_MAX_NOTIFY_AGE_SECONDS", "a day"),
        ("AGORA_MAX_NOTIFY_AGE_SECONDS", "-60"),
        ("AGORA_MAX_NOTIFY_AGE_SECONDS", "nan"),
        ("AGORA_MAX_NOTIFY_AGE_SECONDS", "inf"),
        ("AGORA_NOTIFY_CLOCK_SKEW_SECONDS", "0"),
        ("AGORA_NOTIFY_CLOCK_SKEW_SECONDS", "-1"),
        ("AGORA_NOTIFY_CLOCK_SKEW_SECONDS", "short"),
    ],
)
def test_a_malformed_value_is_refused_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(PRODUCTION | {name: value})


def test_settings_built_in_code_check_only_when_told_to() -> None:
    # Tests and tools build Settings directly; the endpoint then checks nothing.
    assert Settings().max_notify_age is None
