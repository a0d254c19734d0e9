"""What the callback endpoint logs: every callback that is not routine, and on request
(LOG_CALLBACKS=all) every callback. Metrics and the event log count each one regardless."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
from flask import Flask

from tests.conftest import PostCallback, load_example
from webhook.config import Settings

LOGGER = "webhook.views.callbacks"


def records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER]


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in records(caplog)]


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
    (record,) = records(logged)
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
    assert [r.valid for r in records(logged)] == [False, True]  # type: ignore[attr-defined]


class TestLogCallbacksAll:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return replace(settings, log_callbacks="all")

    def test_every_callback_is_logged(
        self, post_callback: PostCallback, logged: pytest.LogCaptureFixture
    ) -> None:
        post_callback(load_example("33_"))

        assert lines(logged) == ["callback stored"]


def test_a_refusal_is_logged_with_the_id_it_is_kept_under(
    post_callback: PostCallback, logged: pytest.LogCaptureFixture, app: Flask
) -> None:
    assert post_callback(load_example("33_"), secret="not-the-secret").status_code == 401

    (refusal,) = [r for r in records(logged) if r.getMessage().startswith("callback refused")]
    # The log formatter's fields (LOG_FORMAT=json) are the record's extra attributes.
    kept = app.extensions["agora.store"].rejected_entry(refusal.__dict__["rejected_id"])
    assert kept is not None
    assert kept.reason == refusal.__dict__["reason"] == "signature_mismatch"
    assert refusal.getMessage() == f"callback refused: signature_mismatch (kept as {kept.entry_id})"
