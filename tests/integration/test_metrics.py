"""/metrics parses with prometheus_client's own parser and counts what happened."""

from __future__ import annotations

from collections.abc import Callable

from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from tests.conftest import PostCallback, load_example
from webhook.store import now_ms
from webhook.store.alerts import AlertStore

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: FlaskClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    samples: Samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return float(samples.get((name, tuple(sorted(labels.items()))), 0.0))


def test_callbacks_refusals_and_pipeline_state_are_counted(
    client: FlaskClient, post_callback: PostCallback, redis: Redis
):
    before = scrape(client)
    post_callback(load_example("31_"))
    post_callback(load_example("31_"))
    post_callback(load_example("33_"))
    post_callback(load_example("40_"), secret="wrong")
    AlertStore(redis).raise_alert(sid="s", cname="c", kind="backup_not_uploaded",
                                  message="m", evidence={}, now_ms=now_ms())  # fmt: skip

    after = scrape(client)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("agora_callbacks_total", event_type="31", outcome="stored") == 1
    assert grew("agora_callbacks_total", event_type="31", outcome="duplicate") == 1
    assert grew("agora_callbacks_total", event_type="33", outcome="stored") == 1
    assert grew("agora_callbacks_rejected_total", reason="signature_mismatch") == 1
    assert grew("agora_callback_ack_seconds_count") == 3
    # The uploaded event's follow-up waits for a worker's relay (none runs here).
    assert value(after, "agora_handoffs_waiting") == 2  # stored, and resent while pending
    assert value(after, "agora_queue_depth") == 0
    lost_backup = {"kind": "backup_not_uploaded", "severity": "critical", "state": "open"}
    assert value(after, "agora_open_alerts", **lost_backup) == 1
    assert value(after, "agora_alerts", state="open") == 1
    assert value(after, "agora_alerts", state="resolved") == 0
    assert value(after, "agora_redis_up") == 1


def test_an_acknowledged_alert_is_still_counted_but_no_longer_as_open(
    client: FlaskClient, redis: Redis
):
    alerts = AlertStore(redis)
    alert, _ = alerts.raise_alert(sid="s", cname="c", kind="upload_failed", message="m",
                                  evidence={}, now_ms=now_ms())  # fmt: skip

    alerts.acknowledge(alert.id, now_ms=now_ms())
    samples = scrape(client)

    labels = {"kind": "upload_failed", "severity": "critical"}
    assert value(samples, "agora_open_alerts", **labels, state="acknowledged") == 1
    assert value(samples, "agora_open_alerts", **labels, state="open") == 0


def test_readiness_reports_workers_without_requiring_them(client: FlaskClient):
    ready = client.get("/readyz").get_json()

    assert ready["status"] == "ready"
    assert ready["workers"] == 0


def test_what_the_workers_did_is_counted_in_redis_for_every_replica(
    client: FlaskClient, post_callback: PostCallback, run_jobs: Callable[[], int]
):
    failed_upload = load_example("31_")
    failed_upload["payload"]["details"]["status"] = 1
    post_callback(failed_upload)

    assert run_jobs() >= 1
    samples = scrape(client)

    assert value(samples, "agora_worker_alert_raised_total", kind="upload_failed") == 1
    assert value(samples, "agora_worker_reconciled_total", state="failed") >= 1
