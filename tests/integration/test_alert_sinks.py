"""Webhook and Slack sinks over real HTTP, against a small receiver on loopback."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import threading
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from redis import Redis
from rq import SimpleWorker
from rq.serializers import JSONSerializer
from standardwebhooks import Webhook

from webhook.alerts import Alert, alert_id
from webhook.config import Settings
from workers import notify
from workers.alerting import DeliveryError, SlackSink, WebhookSink, deliver
from workers.context import WorkerContext, build_context, configure
from workers.lifecycle import AlertSpec, Assessment
from workers.notify import announce_pending
from workers.reconcile import apply

SECRET = "whsec_" + base64.b64encode(b"integration-test-key-32-bytes!!!").decode()
SID = "38f8e3cfdc474cd56fc1ceba380d7e1a"
RAISED_MS = 1_749_551_500_000
# Tokens as real sink URLs carry them: in the query string, and in Slack's path.
QUERY_TOKEN = "QueryToken456"
SLACK_TOKEN = "SlackToken123"
# Short, so the hanging receiver costs a fraction of a second.
FAST_TIMEOUT_S = (1.0, 0.3)

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
)


@dataclasses.dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """What the loopback server saw, and how it should answer the next request."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.requests: list[Received] = []
        self.status = 200
        self.hangs = False
        self.released = threading.Event()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests honours proxy variables; loopback requests must not go through one."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A ThreadingHTTPServer on a free loopback port that records every POST."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.requests.append(Received(self.path, dict(self.headers.items()), body))
            if state.hangs:
                # Never answer; the client gives up first. Released at teardown.
                state.released.wait(timeout=10)
                return
            self.send_response(state.status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state = Receiver(f"http://127.0.0.1:{server.server_address[1]}")
    # A short poll so shutdown() returns at once rather than after the default 0.5 s.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    yield state
    state.released.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def webhook_sink(receiver: Receiver) -> WebhookSink:
    return WebhookSink(
        f"{receiver.url}/hooks/agora?token={QUERY_TOKEN}", SECRET, timeout_s=FAST_TIMEOUT_S
    )


def slack_sink(receiver: Receiver) -> SlackSink:
    return SlackSink(f"{receiver.url}/services/T0000/B0000/{SLACK_TOKEN}", timeout_s=FAST_TIMEOUT_S)


def test_delivered_webhook_verifies_from_the_received_body_and_headers(
    receiver: Receiver,
) -> None:
    deliver({"webhook": webhook_sink(receiver)}, "webhook", ALERT, "raised")

    (received,) = receiver.requests
    payload = Webhook(SECRET).verify(received.body, received.headers)
    assert payload["type"] == "alert.raised"
    assert payload["data"] == ALERT.as_document()
    assert received.headers["Content-Type"] == "application/json"
    assert received.path == f"/hooks/agora?token={QUERY_TOKEN}"


def test_a_redelivered_webhook_carries_the_same_id(receiver: Receiver) -> None:
    sink = webhook_sink(receiver)

    sink.deliver(ALERT, "raised")
    sink.deliver(ALERT, "raised")
    resolved = dataclasses.replace(ALERT, state="resolved", resolved_ms=RAISED_MS + 60_000)
    sink.deliver(resolved, "resolved")

    first, retry, resolution = (r.headers["webhook-id"] for r in receiver.requests)
    assert retry == first
    assert resolution != first


def test_receiver_error_is_a_delivery_error_with_the_status(receiver: Receiver) -> None:
    receiver.status = 500

    with pytest.raises(DeliveryError, match=r"^webhook: HTTP 500$"):
        webhook_sink(receiver).deliver(ALERT, "raised")

    assert len(receiver.requests) == 1


def test_redirect_is_not_followed_and_is_a_delivery_error(receiver: Receiver) -> None:
    receiver.status = 302

    with pytest.raises(DeliveryError, match=r"^webhook: HTTP 302$"):
        webhook_sink(receiver).deliver(ALERT, "raised")


def test_hanging_receiver_is_a_delivery_error_mentioning_the_timeout(
    receiver: Receiver,
) -> None:
    receiver.hangs = True

    with pytest.raises(DeliveryError, match="timed out") as caught:
        webhook_sink(receiver).deliver(ALERT, "raised")

    assert caught.value.message == "webhook: timed out (ReadTimeout)"


def test_unreachable_receiver_is_a_delivery_error_naming_the_error_class() -> None:
    # A port nobody listens on: one the OS just handed out, closed again.
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = closed.server_address[1]
    closed.server_close()
    sink = WebhookSink(f"http://127.0.0.1:{port}/hooks?token={QUERY_TOKEN}", SECRET)

    with pytest.raises(DeliveryError, match=r"^webhook: ConnectionError$"):
        sink.deliver(ALERT, "raised")


def test_slack_receives_the_message_as_json(receiver: Receiver) -> None:
    deliver({"slack": slack_sink(receiver)}, "slack", ALERT, "raised")

    (received,) = receiver.requests
    message = json.loads(received.body)
    assert received.headers["Content-Type"] == "application/json"
    assert received.path == f"/services/T0000/B0000/{SLACK_TOKEN}"
    assert message["text"] == f"🚨 Critical: backup_not_uploaded on sid {SID}"
    assert message["blocks"]


def test_slack_error_is_a_delivery_error_with_the_status(receiver: Receiver) -> None:
    receiver.status = 403

    with pytest.raises(DeliveryError, match=r"^slack: HTTP 403$"):
        slack_sink(receiver).deliver(ALERT, "raised")


@pytest.mark.parametrize("failure", ["status", "hang"])
def test_failures_never_reveal_the_secret_or_url_tokens(
    receiver: Receiver, failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.status, receiver.hangs = 500, failure == "hang"
    errors: list[DeliveryError] = []

    with caplog.at_level(logging.DEBUG):
        for sink in (webhook_sink(receiver), slack_sink(receiver)):
            with pytest.raises(DeliveryError) as caught:
                sink.deliver(ALERT, "raised")
            errors.append(caught.value)

    # What RQ keeps in its failed registry: the message and the formatted traceback.
    reported = "\n".join(f"{e}\n{''.join(traceback.format_exception(e))}" for e in errors)
    for secret in (SECRET, SECRET.removeprefix("whsec_"), QUERY_TOKEN, SLACK_TOKEN):
        assert secret not in reported
    # urllib3 logs request paths at DEBUG (query and Slack token included); ours never do,
    # and nothing anywhere logs the signing secret.
    assert not [r for r in caplog.records if SECRET.removeprefix("whsec_") in r.getMessage()]
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("workers")]
    assert not [m for m in ours if QUERY_TOKEN in m or SLACK_TOKEN in m]


# --- deliveries through RQ: each transition as it stood, once ----------------------------

KIND = "backup_not_uploaded"


@pytest.fixture
def ctx(
    settings: Settings, redis: Redis, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> Iterator[WorkerContext]:
    """A worker's context whose only alert sink is the webhook on the receiver."""
    monkeypatch.setenv("ALERT_WEBHOOK_URL", f"{receiver.url}/hooks")
    monkeypatch.setenv("ALERT_WEBHOOK_SECRET", SECRET)
    monkeypatch.delenv("ALERT_SLACK_WEBHOOK_URL", raising=False)
    notify.configured_sinks.cache_clear()
    configure(settings)
    yield build_context(settings, redis)
    notify.configured_sinks.cache_clear()


def raise_backup_alert(ctx: WorkerContext, at_ms: int) -> None:
    ctx.alerts.raise_alert(sid=SID, cname="lesson-42", kind=KIND, message="not in the bucket",
                           evidence={}, now_ms=at_ms)  # fmt: skip


def webhooks_sent(ctx: WorkerContext, receiver: Receiver) -> list[tuple[str, str, int, str]]:
    """Run the queued deliveries; (webhook-id, type, raised_ms, state) of each received."""
    SimpleWorker([ctx.queue], connection=ctx.redis, serializer=JSONSerializer).work(burst=True)
    sent = []
    for request in receiver.requests:
        headers = {k.lower(): v for k, v in request.headers.items()}
        Webhook(SECRET).verify(request.body, headers)  # raises if it does not verify
        body = json.loads(request.body)
        data = body["data"]
        sent.append((headers["webhook-id"], body["type"], data["raised_ms"], data["state"]))
    return sent


def test_a_delivery_that_runs_after_the_alert_was_raised_again_sends_its_own_episode(
    ctx: WorkerContext, receiver: Receiver
):
    raise_backup_alert(ctx, RAISED_MS)
    announce_pending(ctx, SID)
    ctx.alerts.resolve(SID, KIND, now_ms=RAISED_MS + 60_000, note="cleared: verified")
    announce_pending(ctx, SID)
    # The resolution's delivery is still queued (a sink down, say) when the alert opens again.
    raise_backup_alert(ctx, RAISED_MS + 120_000)
    announce_pending(ctx, SID)

    sent = webhooks_sent(ctx, receiver)

    assert [what for _, *what in sent] == [
        ["alert.raised", RAISED_MS, "open"],
        ["alert.resolved", RAISED_MS, "resolved"],
        ["alert.raised", RAISED_MS + 120_000, "open"],
    ]
    assert len({webhook_id for webhook_id, *_ in sent}) == 3


def test_a_resolution_a_dead_worker_left_unannounced_goes_out_before_the_next_raise(
    ctx: WorkerContext, receiver: Receiver
):
    raise_backup_alert(ctx, RAISED_MS)
    announce_pending(ctx, SID)
    ctx.alerts.resolve(SID, KIND, now_ms=RAISED_MS + 60_000, note="cleared: verified")
    # ... and the worker died before announcing it. The next look raises the kind again.
    spec = AlertSpec(KIND, "not in the bucket again", {})
    apply(ctx, SID, Assessment(state="backuped", raise_alerts=(spec,)), RAISED_MS + 120_000,
          cname="lesson-42")  # fmt: skip

    sent = webhooks_sent(ctx, receiver)

    assert [what for _, *what in sent] == [
        ["alert.raised", RAISED_MS, "open"],
        ["alert.resolved", RAISED_MS, "resolved"],
        ["alert.raised", RAISED_MS + 120_000, "open"],
    ]
