"""Settings.from_env: the limit on refused, unverified requests per client."""

from __future__ import annotations

from datetime import timedelta

import pytest

from webhook.config import Settings
from webhook.errors import ConfigError

PRODUCTION = {"APP_ENV": "production", "AGORA_CALLBACK_SECRETS": "s3cr3t-current"}


def test_thirty_a_minute_by_default() -> None:
    settings = Settings.from_env(PRODUCTION)

    assert settings.bad_signature_limit == 30
    assert settings.bad_signature_window == timedelta(minutes=1)


def test_values_from_the_environment_are_used() -> None:
    env = PRODUCTION | {
        "AGORA_BAD_SIGNATURE_LIMIT": "5",
        "AGORA_BAD_SIGNATURE_WINDOW_SECONDS": "600",
    }

    settings = Settings.from_env(env)

    assert settings.bad_signature_limit == 5
    assert settings.bad_signature_window == timedelta(minutes=10)


def test_zero_switches_the_limit_off() -> None:
    assert (
        Settings.from_env(PRODUCTION | {"AGORA_BAD_SIGNATURE_LIMIT": "0"}).bad_signature_limit == 0
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AGORA_BAD_SIGNATURE_LIMIT", "-1"),
        ("AGORA_BAD_SIGNATURE_LIMIT", "many"),
        ("AGORA_BAD_SIGNATURE_LIMIT", "2.5"),
        ("AGORA_BAD_SIGNATURE_WINDOW_SECONDS", "0"),
        ("AGORA_BAD_SIGNATURE_WINDOW_SECONDS", "a minute"),
        ("AGORA_BAD_SIGNATURE_WINDOW_SECONDS", "inf"),
    ],
)
def test_a_malformed_value_is_refused_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(PRODUCTION | {name: value})
