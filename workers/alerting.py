"""Deliver alert transitions (raised, resolved) to sinks: the log, a signed webhook, Slack.

Each sink delivers one transition or raises DeliveryError; the RQ job around deliver()
retries on DELIVERY_RETRY_INTERVALS_S. Nothing here talks to Redis.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, get_args
from urllib.parse import urlsplit

import requests
from standardwebhooks import Webhook

from webhook.alerts import Alert, Severity, Transition
from webhook.errors import ConfigError, WebhookError

logger = logging.getLogger(__name__)

# Seconds between the RQ job's retries: rq.Retry(max=len(...), interval=list(...)).
# About 22 minutes in all, enough to ride out a receiver's deploy or a short outage.
DELIVERY_RETRY_INTERVALS_S: tuple[int, ...] = (10, 30, 60, 300, 900)

# (connect, read), as requests takes them.
HTTP_TIMEOUT_S: tuple[float, float] = (3.0, 10.0)

WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105  # the format's prefix, not a secret
# The Standard Webhooks spec: a random key "between 24 bytes (192 bits) and 64 bytes
# (512 bits)"; some receivers refuse anything else.
WEBHOOK_SECRET_BYTES = range(24, 65)

_USER_AGENT = "agora-recording-webhook-alerts"
_TRANSITIONS: tuple[str, ...] = get_args(Transition)


class DeliveryError(WebhookError):
    """A sink did not take the alert. The message names the sink and a short cause only:
    never a secret, a URL or a response body, since RQ keeps it in the failed registry."""

    status = 502
    reason = "alert_delivery_failed"


class AlertSink(Protocol):
    """Somewhere an alert's transitions are sent."""

    name: str

    def deliver(self, alert: Alert, transition: Transition) -> None:
        """Send one transition; raises DeliveryError if the sink did not take it."""


class LogSink:
    """One structured log line per transition; always on, so no alert goes unrecorded."""

    name: str = "log"

    def deliver(self, alert: Alert, transition: Transition) -> None:
        # WARNING, not ERROR: ERROR is kept for our own faults (STYLE 4.8), and an alert is
        # a problem with someone's recording, not a bug here. Not INFO either, although the
        # style guide files "alert raised" there: the log is the one sink that is always on,
        # so a raised problem must survive a WARNING filter. Resolved is good news: INFO.
        level = (
            logging.WARNING
            if transition == "raised" and alert.severity in ("critical", "warning")
            else logging.INFO
        )
        logger.log(
            level,
            "alert %s: %s %s on sid %s: %s",
            transition,
            alert.severity,
            alert.kind,
            alert.sid,
            alert.message,
            extra={
                "sid": alert.sid,
                "alert_id": alert.id,
                "kind": alert.kind,
                "severity": alert.severity,
                "transition": transition,
            },
        )


@dataclass(frozen=True)
class OutgoingRequest:
    """A request body and its headers, built before anything touches the network."""

    body: bytes
    headers: Mapping[str, str]


class WebhookSink:
    """A JSON POST signed per the Standard Webhooks spec (webhook-id/-timestamp/-signature)."""

    name: str = "webhook"

    def __init__(
        self, url: str, secret: str, *, timeout_s: float | tuple[float, float] = HTTP_TIMEOUT_S
    ) -> None:
        _check_webhook_secret(secret, "the webhook secret")
        self._url = url
        self._signer = Webhook(secret)
        self._timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"WebhookSink(url={url_origin(self._url)!r})"

    def deliver(self, alert: Alert, transition: Transition) -> None:
        # Signed at each attempt: the timestamp must be fresh for the receiver's replay
        # window (5 minutes in the reference libraries), while the id and body stay the same.
        request = self.build_request(alert, transition, now=datetime.now(UTC))
        _post_json(self.name, self._url, request, self._timeout_s)

    def build_request(
        self, alert: Alert, transition: Transition, *, now: datetime
    ) -> OutgoingRequest:
        """The signed request for one transition, as sent at `now` (an aware datetime)."""
        body = json.dumps(
            {
                "type": f"alert.{transition}",
                "timestamp": _iso_utc(_transition_ms(alert, transition)),
                "data": alert.as_document(),
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )
        msg_id = webhook_message_id(alert, transition)
        sent_at = datetime.fromtimestamp(int(now.timestamp()), UTC)
        return OutgoingRequest(
            body=body.encode(),
            headers={
                "webhook-id": msg_id,
                "webhook-timestamp": str(int(sent_at.timestamp())),
                "webhook-signature": self._signer.sign(msg_id, sent_at, body),
            },
        )


def webhook_message_id(alert: Alert, transition: Transition) -> str:
    """The webhook-id of one transition: the same on every retry, so receivers can dedupe.

    raised_ms tells one episode of an alert from the next after it was resolved. Hashed so
    the id is short and safe in a header whatever the alert id holds.
    """
    digest = hashlib.sha256(f"{alert.id}\n{transition}\n{alert.raised_ms}".encode())
    return "msg_" + digest.hexdigest()[:32]


class SlackSink:
    """A Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat...)."""

    name: str = "slack"

    def __init__(
        self, url: str, *, timeout_s: float | tuple[float, float] = HTTP_TIMEOUT_S
    ) -> None:
        self._url = url
        self._timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"SlackSink(url={url_origin(self._url)!r})"

    def deliver(self, alert: Alert, transition: Transition) -> None:
        body = json.dumps(build_slack_message(alert, transition), ensure_ascii=False)
        _post_json(
            self.name, self._url, OutgoingRequest(body=body.encode(), headers={}), self._timeout_s
        )


_SEVERITY_EMOJI: Mapping[Severity, str] = {
    "critical": "🚨",
    "warning": "⚠️",
    "info": "ℹ️",  # noqa: RUF001  # the information emoji, not a letter i
}
# Slack's limits are 3000 characters per section text and 2000 per field.
_MAX_MESSAGE_CHARS = 2000
_MAX_FIELD_CHARS = 500


def build_slack_message(alert: Alert, transition: Transition) -> dict[str, Any]:
    """The incoming-webhook payload: `text` for notifications, `blocks` for the channel."""
    emoji = _SEVERITY_EMOJI.get(alert.severity, "❔")
    title = f"{emoji} *{alert.severity.capitalize()}: {_escape(alert.kind)}*"
    message = _escaped(alert.message, _MAX_MESSAGE_CHARS)
    cname = "—" if alert.cname is None else f"`{_escaped(alert.cname, _MAX_FIELD_CHARS)}`"
    blocks: list[dict[str, Any]] = []
    if transition == "resolved":
        resolved = f"✅ *Resolved* at {_iso_utc(_transition_ms(alert, transition))}"
        blocks.append(_section(resolved))
        text = f"✅ Resolved: {alert.kind} on sid {alert.sid}"
    else:
        text = f"{emoji} {alert.severity.capitalize()}: {alert.kind} on sid {alert.sid}"
    blocks += [
        _section(f"{title}\n{message}"),
        {
            "type": "section",
            "fields": [
                _mrkdwn(f"*Session*\n`{_escaped(alert.sid, _MAX_FIELD_CHARS)}`"),
                _mrkdwn(f"*Channel*\n{cname}"),
            ],
        },
        {
            "type": "context",
            "elements": [
                _mrkdwn(f"alert `{_escape(alert.id)}` · raised {_iso_utc(alert.raised_ms)}")
            ],
        },
    ]
    return {"text": _escaped(text, _MAX_MESSAGE_CHARS), "blocks": blocks}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(text)}


def _mrkdwn(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": text}


def _escape(text: str) -> str:
    # Slack's three control characters. cname comes from Agora's clients: unescaped, a
    # channel called "<!channel>" would page everyone in the Slack channel.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _escaped(text: str, limit: int) -> str:
    """Escaped, then clipped to `limit` characters: Slack counts the escaped text (clipped
    first, "&" and "<" grew past its 3000, and Slack refused the alert), and never
    inside an entity."""
    escaped = _escape(text)
    if len(escaped) <= limit:
        return escaped
    cut = escaped[: limit - 1]
    entity = cut.rfind("&")
    if entity != -1 and ";" not in cut[entity:]:
        cut = cut[:entity]
    return cut + "…"


def _transition_ms(alert: Alert, transition: Transition) -> int:
    if transition == "resolved":
        return alert.resolved_ms if alert.resolved_ms is not None else alert.updated_ms
    return alert.raised_ms


def _iso_utc(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _post_json(
    sink: str, url: str, request: OutgoingRequest, timeout_s: float | tuple[float, float]
) -> None:
    """POST a JSON body; any answer but 2xx, and any network failure, is a DeliveryError."""
    headers = {"Content-Type": "application/json", "User-Agent": _USER_AGENT, **request.headers}
    # requests.post opens and closes its own session: alerts are rare, so keeping
    # connections alive is not worth an object that must be closed. Redirects are not
    # followed: requests would turn a 301/302 into a GET and lose the body.
    # `from None` below: requests' messages and tracebacks carry the URL (the Slack token
    # is in its path), and RQ stores the traceback in Redis.
    try:
        response = requests.post(
            url, data=request.body, headers=headers, timeout=timeout_s, allow_redirects=False
        )
    except requests.Timeout as err:
        raise DeliveryError(f"{sink}: timed out ({type(err).__name__})") from None
    except requests.RequestException as err:
        raise DeliveryError(f"{sink}: {type(err).__name__}") from None
    with response:
        if not 200 <= response.status_code < 300:
            raise DeliveryError(f"{sink}: HTTP {response.status_code}")


def deliver(
    sinks: Mapping[str, AlertSink], sink_name: str, alert: Alert, transition: Transition
) -> None:
    """Deliver one transition to one sink (what the RQ job calls, once per sink).

    Raises:
        DeliveryError: the sink failed, or is not configured in this worker (raised rather
            than dropped, so a wiring mistake reaches the failed registry, and a retry after
            the configuration is restored still delivers).
        ValueError: transition is neither "raised" nor "resolved".
    """
    if transition not in _TRANSITIONS:
        raise ValueError(f"transition must be one of {_TRANSITIONS}, got {transition!r}")
    sink = sinks.get(sink_name)
    if sink is None:
        raise DeliveryError(f"{sink_name}: sink not configured")
    sink.deliver(alert, transition)


@dataclass(frozen=True)
class AlertSinkSettings:
    """Where alerts go besides the log, read from the environment once."""

    webhook_url: str | None = None
    webhook_secret: str | None = None
    slack_webhook_url: str | None = None

    def __repr__(self) -> str:
        # URLs carry tokens (Slack's is in the path): show the origin only. Never the secret.
        webhook = None if self.webhook_url is None else url_origin(self.webhook_url)
        slack = None if self.slack_webhook_url is None else url_origin(self.slack_webhook_url)
        secret = None if self.webhook_secret is None else "<secret>"
        return (
            f"AlertSinkSettings(webhook_url={webhook!r}, webhook_secret={secret}, "
            f"slack_webhook_url={slack!r})"
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AlertSinkSettings:
        """Parse and check ALERT_WEBHOOK_URL, ALERT_WEBHOOK_SECRET, ALERT_SLACK_WEBHOOK_URL.

        Raises:
            ConfigError: a URL is not http(s), the secret is malformed, or only one of the
                webhook URL and its secret is set. Messages never quote the values.
        """
        env = os.environ if env is None else env
        webhook_url = env.get("ALERT_WEBHOOK_URL", "").strip() or None
        webhook_secret = env.get("ALERT_WEBHOOK_SECRET", "").strip() or None
        slack_webhook_url = env.get("ALERT_SLACK_WEBHOOK_URL", "").strip() or None
        if webhook_url is not None:
            _check_url(webhook_url, "ALERT_WEBHOOK_URL")
            if webhook_secret is None:
                raise ConfigError("ALERT_WEBHOOK_SECRET must be set when ALERT_WEBHOOK_URL is")
        if webhook_secret is not None:
            # A secret alone is a half-done configuration, not a choice to be ignored.
            if webhook_url is None:
                raise ConfigError("ALERT_WEBHOOK_URL must be set when ALERT_WEBHOOK_SECRET is")
            _check_webhook_secret(webhook_secret, "ALERT_WEBHOOK_SECRET")
        if slack_webhook_url is not None:
            _check_url(slack_webhook_url, "ALERT_SLACK_WEBHOOK_URL")
        return cls(
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
            slack_webhook_url=slack_webhook_url,
        )


def build_sinks(settings: AlertSinkSettings) -> dict[str, AlertSink]:
    """The sinks this configuration turns on, by name; "log" is always there."""
    sinks: dict[str, AlertSink] = {LogSink.name: LogSink()}
    if settings.webhook_url is not None and settings.webhook_secret is not None:
        sinks[WebhookSink.name] = WebhookSink(settings.webhook_url, settings.webhook_secret)
    if settings.slack_webhook_url is not None:
        sinks[SlackSink.name] = SlackSink(settings.slack_webhook_url)
    return sinks


def _check_webhook_secret(secret: str, name: str) -> None:
    """Refuse a secret that is not `whsec_` + standard base64 of 24 to 64 bytes.

    Checked strictly because the standardwebhooks library is lenient: it decodes without
    validation, so a URL-safe base64 secret ("-", "_") would silently sign with another key.
    """
    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        raise ConfigError(f"{name} must start with {WEBHOOK_SECRET_PREFIX!r}")
    encoded = secret.removeprefix(WEBHOOK_SECRET_PREFIX)
    try:
        # The library accepts unpadded base64 too, so pad before validating.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        raise ConfigError(f"{name} must be {WEBHOOK_SECRET_PREFIX!r} + base64") from None
    if len(key) not in WEBHOOK_SECRET_BYTES:
        raise ConfigError(
            f"{name} must decode to {WEBHOOK_SECRET_BYTES.start} to "
            f"{WEBHOOK_SECRET_BYTES.stop - 1} bytes, got {len(key)}"
        )


def _check_url(url: str, name: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises ValueError on a bad port
    except ValueError:
        raise ConfigError(f"{name} must be an http(s) URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name} must be an http(s) URL")


def url_origin(url: str) -> str:
    """The scheme, host and port of a URL, fit for logs: no credentials, path or query string."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")
