"""GET /api/v1/alerts and POST /api/v1/alerts/<id>/ack."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
from flask.testing import FlaskClient
from redis import Redis

from webhook.alerts import Alert, Severity, Transition, alert_id
from webhook.app import create_app
from webhook.config import Settings
from webhook.store import now_ms
from webhook.store.alerts import AlertStore

TOKEN = "ops-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SID = "38f8e3cfdc474cd56fc1ceba380d7e1a"


@pytest.fixture
def api(settings: Settings, redis: Redis) -> FlaskClient:
    return create_app(replace(settings, api_tokens=(TOKEN,))).test_client()


@pytest.fixture
def raised(redis: Redis) -> str:
    alert, _ = AlertStore(redis).raise_alert(
        sid=SID, cname="class1024", kind="backup_not_uploaded", message="files missing",
        evidence={"missing": ["a.m3u8"]}, now_ms=now_ms() - 2_000,
    )  # fmt: skip
    AlertStore(redis).raise_alert(
        sid=SID,
        cname="class1024",
        kind="failover",
        message="moved",
        evidence={},
        now_ms=now_ms() - 1_000,
    )
    return alert.id


def test_open_alerts_are_listed_newest_first(api: FlaskClient, raised: str):
    response = api.get("/api/v1/alerts", headers=AUTH)

    assert response.status_code == 200
    kinds = [a["kind"] for a in response.get_json()["alerts"]]
    assert kinds == ["failover", "backup_not_uploaded"]


def test_alerts_filter_by_kind(api: FlaskClient, raised: str):
    response = api.get("/api/v1/alerts?kind=backup_not_uploaded", headers=AUTH)

    (alert,) = response.get_json()["alerts"]
    assert alert["evidence"] == {"missing": ["a.m3u8"]}


def test_an_acknowledged_alert_moves_out_of_the_open_list(api: FlaskClient, raised: str):
    acked = api.post(f"/api/v1/alerts/{raised}/ack", headers=AUTH)

    assert acked.status_code == 200
    assert acked.get_json()["state"] == "acknowledged"
    open_kinds = [a["kind"] for a in api.get("/api/v1/alerts", headers=AUTH).get_json()["alerts"]]
    assert open_kinds == ["failover"]
    listed = api.get("/api/v1/alerts?state=acknowledged", headers=AUTH).get_json()["alerts"]
    assert [a["id"] for a in listed] == [raised]


def test_acknowledging_an_unknown_alert_is_404(api: FlaskClient):
    response = api.post("/api/v1/alerts/al_nothing/ack", headers=AUTH)

    assert response.status_code == 404
    assert response.get_json()["reason"] == "not_found"


def test_a_bad_filter_is_400_naming_the_parameter(api: FlaskClient):
    response = api.get("/api/v1/alerts?state=burning&limit=0", headers=AUTH)

    assert response.status_code == 400
    assert response.get_json()["reason"] == "invalid_query"
    assert response.get_json()["message"] == "the query string failed validation"
    assert set(response.get_json()["errors"]) == {"state", "limit"}


def test_alerts_need_a_token(api: FlaskClient):
    assert api.get("/api/v1/alerts").status_code == 401


def test_an_acknowledge_racing_a_resolve_never_brings_the_alert_back(redis: Redis):
    # The web side's acknowledge and a worker's resolve share no lock: acknowledging after
    # the worker had read "open" used to write "acknowledged" over its "resolved".
    store = AlertStore(redis)
    ids = []
    for n in range(150):
        alert, _ = store.raise_alert(sid=f"race-{n}", cname="room", kind="stale_session",
                                     message="silent", evidence={}, now_ms=1_000)  # fmt: skip
        ids.append(alert.id)

    def acknowledge() -> None:
        racing = AlertStore(Redis(connection_pool=redis.connection_pool))
        for identifier in ids:
            racing.acknowledge(identifier, now_ms=2_000)

    operator = threading.Thread(target=acknowledge)
    operator.start()
    for n in range(150):
        store.resolve(f"race-{n}", "stale_session", now_ms=2_000, note="cleared: recording")
    operator.join()

    assert {store.get(i).state for i in ids} == {"resolved"}  # type: ignore[union-attr]  # all raised above
    assert redis.zcard("agora:alerts:acknowledged") == redis.zcard("agora:alerts:open") == 0


def raise_error(
    store: AlertStore, sid: str, severity: Severity, at: int
) -> tuple[Alert, Transition | None]:
    return store.raise_alert(sid=sid, cname="room", kind="recording_error",
                             message=f"a {severity} error", evidence={"severity": severity},
                             now_ms=at, severity=severity)  # fmt: skip


def test_the_most_severe_raise_decides_an_alert_whatever_the_order(redis: Redis):
    # Agora's debug-level error opens the alert as info; a fatal one of the same session,
    # before or after it, makes it critical and says what the fatal one said.
    store = AlertStore(redis)
    raise_error(store, "mild-first", "info", 1_000)
    store.acknowledge(alert_id("mild-first", "recording_error"), now_ms=1_500)
    _, escalation = raise_error(store, "mild-first", "critical", 2_000)
    raise_error(store, "severe-first", "critical", 1_000)
    _, milder = raise_error(store, "severe-first", "info", 2_000)

    assert (escalation, milder) == ("raised", None)  # the sinks hear of the escalation
    for sid in ("mild-first", "severe-first"):
        alert = store.get(alert_id(sid, "recording_error"))
        assert alert is not None
        assert (alert.severity, alert.state) == ("critical", "open")  # the ack covered info
        assert (alert.message, alert.evidence) == ("a critical error", {"severity": "critical"})
