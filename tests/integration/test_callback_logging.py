"""What the callback endpoint logs: every callback that is not routine, and on request
(LOG_CALLBACKS=all) every callback. Metrics and the event log count each one regardless."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest
from flask.testing import FlaskClient
from redis import Redis

from tests.conftest import SECRET, PostCallback, load_example
from webhook.app import create_app
from webhook.config import Settings
from webhook.signature import HEADER_V2, sign

LOGGER = "webhook.views.callbacks"


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger=LOGGER)
    return caplog


def test_a_routine_first_delivery_is_not_logged_by_default(
    post_callback: PostCallback, logged: pytest.LogCaptureFixture
) -> None:
    assert post_callback(load_example("33_")).get_json() == {"result": "stored"}

    assert lines(logged) == []


def test_a_duplicate_is_logged(post_callback: PostCallback, logged: pytest.LogCaptureFixture):
    body = load_example("33_")
    post_callback(body)

    post_callback(body)

    assert lines(logged) == ["callback duplicate"]
    (record,) = [r for r in logged.records if r.name == LOGGER]
    assert record.notice_id == body["noticeId"]  # type: ignore[attr-defined]  # from extra=


def test_an_invalid_or_unknown_callback_is_logged(
    post_callback: PostCallback, logged: pytest.LogCaptureFixture
) -> None:
    invalid = load_example("33_")
    invalid["payload"]["details"]["progress"] = "most of it"
    unknown = load_example("31_") | {"eventType": 9999}

    post_callback(invalid)
    post_callback(unknown)

    assert lines(logged) == ["callback stored", "callback stored"]
    assert [r.valid for r in logged.records if r.name == LOGGER] == [False, True]  # type: ignore[attr-defined]


def test_log_callbacks_all_logs_every_callback(
    settings: Settings, redis: Redis, logged: pytest.LogCaptureFixture
) -> None:
    client: FlaskClient = create_app(replace(settings, log_callbacks="all")).test_client()
    raw = json.dumps(load_example("33_")).encode()

    client.post(
        "/agora/callback",
        data=raw,
        headers={"Content-Type": "application/json", HEADER_V2: sign(raw, SECRET)},
    )

    assert lines(logged) == ["callback stored"]
