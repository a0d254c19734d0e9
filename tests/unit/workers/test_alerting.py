"""workers.alerting without the network: signing, message ids, Slack text, settings, the log."""

from __future__ import annotations

import base64
import dataclasses
import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rq import Retry
from standardwebhooks import Webhook, WebhookVerificationError

from webhook.alerts import Alert, Transition, alert_id
from webhook.errors import ConfigError
from workers.alerting import (
    DELIVERY_RETRY_INTERVALS_S,
    AlertSinkSettings,
    DeliveryError,
    LogSink,
    SlackSink,
    WebhookSink,
    build_sinks,
    build_slack_message,
    deliver,
    webhook_message_id,
)

SECRET = "whsec_" + base64.b64encode(b"unit-test-key-of-32-bytes-long!!").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"another-key-also-32-bytes-long!!").decode()
SID = "38f8e3cfdc474cd56fc1ceba380d7e1a"
RAISED_MS = 1_749_551_500_000
SLACK_URL = "https://hooks.slack.com/services/T0000/B0000/SlackToken123"
WEBHOOK_URL = "https://alerts.example.com/hooks/agora?token=QueryToken456"
# The smallest environment with every sink on; each test changes one thing.
FULL_ENV = {
    "ALERT_WEBHOOK_URL": WEBHOOK_URL,
    "ALERT_WEBHOOK_SECRET": SECRET,
    "ALERT_SLACK_WEBHOOK_URL": SLACK_URL,
}


def now() -> datetime:
    # Read when a request is signed, never at import: the verifying library refuses a
    # timestamp more than five minutes old, and the suite runs longer than that.
    return datetime.now(UTC)


ALERT = Alert(
    id=alert_id(SID, "backup_not_uploaded"),
    sid=SID,
    cname="lesson-42",
    kind="backup_not_uploaded",
    severity="critical",
    message="The backup of 3 files was not uploaded within 5 minutes",
    state="open",
    raised_ms=RAISED_MS,
    updated_ms=RAISED_MS,
    evidence={"files": 3},
)
RESOLVED = dataclasses.replace(
    ALERT, state="resolved", updated_ms=RAISED_MS + 60_000, resolved_ms=RAISED_MS + 60_000
)


def headers_of(sink: WebhookSink, alert: Alert, transition: Transition, at: datetime | None = None):
    request = sink.build_request(alert, transition, now=at or now())
    return request.body, dict(request.headers)


# --- WebhookSink ----------------------------------------------------------------------------


def test_webhook_request_verifies_with_the_standard_webhooks_library() -> None:
    body, headers = headers_of(WebhookSink(WEBHOOK_URL, SECRET), ALERT, "raised")

    payload = Webhook(SECRET).verify(body, headers)

    assert payload == {
        "type": "alert.raised",
        "timestamp": "2025-06-10T10:31:40.000Z",
        "data": ALERT.as_document(),
    }


def test_webhook_request_signed_with_another_secret_does_not_verify() -> None:
    body, headers = headers_of(WebhookSink(WEBHOOK_URL, OTHER_SECRET), ALERT, "raised")

    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body, headers)


def test_webhook_signature_is_v1_base64_hmac_of_id_timestamp_and_body() -> None:
    signed_at = now()
    _, headers = headers_of(WebhookSink(WEBHOOK_URL, SECRET), ALERT, "raised", signed_at)

    version, signature = headers["webhook-signature"].split(",")
    assert version == "v1"
    assert len(base64.b64decode(signature, validate=True)) == 32
    assert headers["webhook-timestamp"] == str(int(signed_at.timestamp()))


def test_resolved_request_is_alert_resolved_at_the_resolution_time() -> None:
    body, headers = headers_of(WebhookSink(WEBHOOK_URL, SECRET), RESOLVED, "resolved")

    payload = Webhook(SECRET).verify(body, headers)

    assert payload["type"] == "alert.resolved"
    assert payload["timestamp"] == "2025-06-10T10:32:40.000Z"
    assert payload["data"]["state"] == "resolved"


def test_a_retried_transition_carries_the_same_webhook_id_and_body() -> None:
    sink = WebhookSink(WEBHOOK_URL, SECRET)

    first_body, first = headers_of(sink, ALERT, "raised", now() - timedelta(minutes=15))
    retry_body, retry = headers_of(sink, ALERT, "raised")

    assert retry["webhook-id"] == first["webhook-id"]
    assert retry_body == first_body
    assert retry["webhook-timestamp"] != first["webhook-timestamp"]


def test_resolved_has_another_webhook_id_than_raised() -> None:
    assert webhook_message_id(RESOLVED, "resolved") != webhook_message_id(ALERT, "raised")


def test_the_same_alert_raised_again_later_has_another_webhook_id() -> None:
    again = dataclasses.replace(ALERT, raised_ms=RAISED_MS + 3_600_000)

    assert webhook_message_id(again, "raised") != webhook_message_id(ALERT, "raised")


def test_webhook_id_is_header_safe() -> None:
    odd = dataclasses.replace(ALERT, id="al_with.dots and spaces\n")

    msg_id = webhook_message_id(odd, "raised")

    assert msg_id.startswith("msg_")
    assert msg_id.isascii()
    assert msg_id.replace("_", "").isalnum()


# --- SlackSink ------------------------------------------------------------------------------


def block_texts(message: dict[str, Any]) -> str:
    """Every mrkdwn text in the blocks, in order, one per line."""
    texts = []
    for block in message["blocks"]:
        if "text" in block:
            texts.append(block["text"]["text"])
        texts += [field["text"] for field in block.get("fields", [])]
        texts += [element["text"] for element in block.get("elements", [])]
    return "\n".join(texts)


def test_slack_raised_message_names_severity_kind_session_channel_and_problem() -> None:
    message = build_slack_message(ALERT, "raised")
    texts = block_texts(message)

    assert message["text"] == f"🚨 Critical: backup_not_uploaded on sid {SID}"
    assert "🚨 *Critical: backup_not_uploaded*" in texts
    assert ALERT.message in texts
    assert f"`{SID}`" in texts
    assert "`lesson-42`" in texts
    assert ALERT.id in texts
    assert "✅" not in texts


def test_slack_resolved_message_opens_with_a_check_mark_line() -> None:
    message = build_slack_message(RESOLVED, "resolved")

    assert message["text"] == f"✅ Resolved: backup_not_uploaded on sid {SID}"
    assert message["blocks"][0]["text"]["text"] == "✅ *Resolved* at 2025-06-10T10:32:40.000Z"
    assert "backup_not_uploaded" in block_texts(message)


def test_slack_warning_uses_the_warning_emoji() -> None:
    warning = dataclasses.replace(ALERT, kind="stale_session", severity="warning")

    assert build_slack_message(warning, "raised")["text"].startswith("⚠️ Warning: stale_session")


def test_slack_escapes_mentions_in_agora_supplied_text() -> None:
    hostile = dataclasses.replace(ALERT, cname="<!channel> & co")

    texts = block_texts(build_slack_message(hostile, "raised"))

    assert "<!channel>" not in texts
    assert "`&lt;!channel&gt; &amp; co`" in texts


def test_slack_texts_stay_within_slack_s_limits_once_escaped() -> None:
    # Agora's errorMsg reaches the message as it came; each & < > grows when escaped.
    hostile = dataclasses.replace(ALERT, message="a&b<c>" * 400, cname="<&>" * 300)

    message = build_slack_message(hostile, "raised")

    sections = [b["text"]["text"] for b in message["blocks"] if "text" in b]
    fields = [f["text"] for b in message["blocks"] for f in b.get("fields", [])]
    assert max(len(t) for t in sections) <= 3000  # Slack refuses a longer section
    assert max(len(t) for t in fields) <= 2000
    for text in (*sections, *fields):
        assert not re.search(r"&(?!amp;|lt;|gt;)", text), "an entity cut in half"


def test_an_alert_as_of_its_raise_is_open_whatever_happened_since() -> None:
    later = dataclasses.replace(RESOLVED, acknowledged_ms=RAISED_MS + 1_000)

    assert later.as_of("raised") == dataclasses.replace(ALERT, acknowledged_ms=None)
    assert later.as_of("resolved") == later
    assert Alert.from_document(later.as_document()) == later


def test_slack_without_a_channel_name_shows_a_dash() -> None:
    texts = block_texts(build_slack_message(dataclasses.replace(ALERT, cname=None), "raised"))

    assert "*Channel*\n—" in texts


def test_slack_clips_a_long_message_below_slacks_limit() -> None:
    long = dataclasses.replace(ALERT, message="x" * 5000)

    section = build_slack_message(long, "raised")["blocks"][0]["text"]["text"]

    assert len(section) < 3000
    assert section.endswith("…")


# --- LogSink --------------------------------------------------------------------------------


def test_log_sink_writes_one_warning_with_the_alert_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="workers.alerting"):
        LogSink().deliver(ALERT, "raised")

    (record,) = caplog.records
    assert record.name == "workers.alerting"
    assert record.levelno == logging.WARNING
    assert (record.sid, record.alert_id, record.kind, record.severity, record.transition) == (  # type: ignore[attr-defined]  # set through extra=
        SID,
        ALERT.id,
        "backup_not_uploaded",
        "critical",
        "raised",
    )
    assert ALERT.message in record.getMessage()


def test_log_sink_writes_a_resolved_alert_at_info(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="workers.alerting"):
        LogSink().deliver(RESOLVED, "resolved")

    (record,) = caplog.records
    assert record.levelno == logging.INFO
    assert record.transition == "resolved"  # type: ignore[attr-defined]  # set through extra=


def test_log_sink_writes_a_raised_info_alert_at_info(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="workers.alerting"):
        LogSink().deliver(dataclasses.replace(ALERT, severity="info"), "raised")

    (record,) = caplog.records
    assert record.levelno == logging.INFO


# --- deliver() and the retry schedule -------------------------------------------------------


class RecordingSink:
    name = "recording"

    def __init__(self) -> None:
        self.delivered: list[tuple[Alert, Transition]] = []

    def deliver(self, alert: Alert, transition: Transition) -> None:
        self.delivered.append((alert, transition))


def test_deliver_hands_the_transition_to_the_named_sink_only() -> None:
    wanted, other = RecordingSink(), RecordingSink()

    deliver({"wanted": wanted, "other": other}, "wanted", ALERT, "raised")

    assert wanted.delivered == [(ALERT, "raised")]
    assert other.delivered == []


def test_deliver_to_a_sink_that_is_not_configured_is_a_delivery_error() -> None:
    with pytest.raises(DeliveryError, match="slack: sink not configured"):
        deliver(build_sinks(AlertSinkSettings()), "slack", ALERT, "raised")


def test_deliver_refuses_an_unknown_transition() -> None:
    with pytest.raises(ValueError, match="acknowledged"):
        deliver({"recording": RecordingSink()}, "recording", ALERT, "acknowledged")  # type: ignore[arg-type]  # what a JSON job argument could hold


def test_retry_intervals_fit_rq_retry() -> None:
    retry = Retry(max=len(DELIVERY_RETRY_INTERVALS_S), interval=list(DELIVERY_RETRY_INTERVALS_S))

    assert retry.max == 5
    assert retry.intervals == [10, 30, 60, 300, 900]


# --- AlertSinkSettings and build_sinks ------------------------------------------------------


def test_no_alert_settings_leave_only_the_log_sink() -> None:
    settings = AlertSinkSettings.from_env({})

    assert settings == AlertSinkSettings()
    assert list(build_sinks(settings)) == ["log"]


def test_every_alert_setting_turns_on_every_sink() -> None:
    sinks = build_sinks(AlertSinkSettings.from_env(FULL_ENV))

    assert sorted(sinks) == ["log", "slack", "webhook"]
    assert all(name == sink.name for name, sink in sinks.items())
    assert isinstance(sinks["webhook"], WebhookSink)
    assert isinstance(sinks["slack"], SlackSink)


def test_blank_alert_settings_count_as_unset() -> None:
    settings = AlertSinkSettings.from_env(dict.fromkeys(FULL_ENV, "  "))

    assert settings == AlertSinkSettings()


def test_webhook_url_without_a_secret_is_refused() -> None:
    env = dict(FULL_ENV)
    del env["ALERT_WEBHOOK_SECRET"]

    with pytest.raises(ConfigError, match="ALERT_WEBHOOK_SECRET"):
        AlertSinkSettings.from_env(env)


def test_webhook_secret_without_a_url_is_refused() -> None:
    env = dict(FULL_ENV)
    del env["ALERT_WEBHOOK_URL"]

    with pytest.raises(ConfigError, match="ALERT_WEBHOOK_URL"):
        AlertSinkSettings.from_env(env)


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param(SECRET.removeprefix("whsec_"), id="no-prefix"),
        pytest.param("whsec_not base64!", id="not-base64"),
        pytest.param("whsec_" + base64.urlsafe_b64encode(b"\xfb" * 32).decode(), id="urlsafe"),
        pytest.param("whsec_" + base64.b64encode(b"short").decode(), id="too-short"),
        pytest.param("whsec_" + base64.b64encode(b"k" * 65).decode(), id="too-long"),
        pytest.param("whsec_", id="empty"),
    ],
)
def test_malformed_webhook_secret_is_refused(secret: str) -> None:
    with pytest.raises(ConfigError, match="ALERT_WEBHOOK_SECRET"):
        AlertSinkSettings.from_env(FULL_ENV | {"ALERT_WEBHOOK_SECRET": secret})


def test_refused_webhook_secret_is_not_quoted() -> None:
    secret = "whsec_" + base64.b64encode(b"short").decode()

    with pytest.raises(ConfigError) as caught:
        AlertSinkSettings.from_env(FULL_ENV | {"ALERT_WEBHOOK_SECRET": secret})

    assert secret.removeprefix("whsec_") not in str(caught.value)


def test_unpadded_base64_secret_is_accepted_as_the_library_accepts_it() -> None:
    unpadded = "whsec_" + base64.b64encode(b"k" * 25).decode().rstrip("=")

    settings = AlertSinkSettings.from_env(FULL_ENV | {"ALERT_WEBHOOK_SECRET": unpadded})

    assert settings.webhook_secret == unpadded


@pytest.mark.parametrize("name", ["ALERT_WEBHOOK_URL", "ALERT_SLACK_WEBHOOK_URL"])
@pytest.mark.parametrize(
    "url", ["ftp://hooks.example.com/x/Tok3n", "hooks.example.com/x/Tok3n", "http://h:99999/Tok3n"]
)
def test_non_http_url_is_refused_without_quoting_it(name: str, url: str) -> None:
    with pytest.raises(ConfigError, match=name) as caught:
        AlertSinkSettings.from_env(FULL_ENV | {name: url})

    assert "Tok3n" not in str(caught.value)


def test_settings_repr_shows_no_secret_and_no_url_token() -> None:
    text = repr(AlertSinkSettings.from_env(FULL_ENV))

    assert SECRET.removeprefix("whsec_") not in text
    assert "SlackToken123" not in text
    assert "QueryToken456" not in text
    assert "https://hooks.slack.com" in text
    assert "https://alerts.example.com" in text
    assert str(AlertSinkSettings.from_env(FULL_ENV)) == text


def test_sink_reprs_show_no_secret_and_no_url_token() -> None:
    text = repr(build_sinks(AlertSinkSettings.from_env(FULL_ENV)))

    assert SECRET.removeprefix("whsec_") not in text
    assert "SlackToken123" not in text
    assert "QueryToken456" not in text
    assert "/services" not in text
