"""session_rows: one line per session for the lists, from a real redis-server."""

from __future__ import annotations

import json

from redis import Redis

from tests.conftest import load_example, varied
from webhook.recordings import StartCall
from webhook.schemas import load_callback
from webhook.store import CallbackStore
from webhook.store.alerts import AlertStore
from webhook.store.overviews import session_rows
from webhook.store.recordings import RecordingStore

NOW = 1_780_000_000_000


def store_progress(redis: Redis, sid: str, progress: int) -> None:
    body = varied(load_example("33_"), sid=sid, notice_id=f"n-{sid}")
    body["payload"]["details"]["progress"] = progress
    CallbackStore(redis).record(load_callback(body), json.dumps(body).encode(), received_ms=NOW)


def raise_alert(alerts: AlertStore, sid: str, kind: str) -> str:
    alert, _ = alerts.raise_alert(
        sid=sid, cname="c", kind=kind, message="m", evidence={}, now_ms=NOW
    )
    return alert.id


def test_a_row_carries_the_summary_state_and_active_alert_kinds(redis: Redis):
    store_progress(redis, "sid-a", 4200)
    RecordingStore(redis).set_state("sid-a", "backuped", NOW)
    alerts = AlertStore(redis)
    raise_alert(alerts, "sid-a", "backup_not_uploaded")
    alerts.acknowledge(raise_alert(alerts, "sid-a", "upload_warning"), now_ms=NOW)
    raise_alert(alerts, "sid-a", "stale_session")
    alerts.resolve("sid-a", "stale_session", now_ms=NOW, note="back")

    (row,) = session_rows(redis, redis, ["sid-a"])

    assert row.state == "backuped"
    assert row.upload_progress == 4200
    assert row.last_seen_ms == NOW
    assert row.cname == load_example("33_")["payload"]["cname"]
    assert row.active_alerts == ("backup_not_uploaded", "upload_warning")


def test_a_session_known_only_from_the_apps_start_has_its_channel(redis: Redis):
    start = StartCall(
        resource_id="r", cname="from-start", uid="1", mode="mix", client_request={},
        started_ms=NOW,
    )  # fmt: skip
    RecordingStore(redis).record_start("sid-b", start)

    (row,) = session_rows(redis, redis, ["sid-b"])

    assert (row.cname, row.last_seen_ms, row.upload_progress, row.active_alerts) == (
        "from-start",
        None,
        None,
        (),
    )


def test_rows_keep_the_order_asked_for_and_unknown_sessions_are_blank(redis: Redis):
    store_progress(redis, "sid-1", 1)
    store_progress(redis, "sid-2", 2)

    rows = session_rows(redis, redis, ["sid-2", "nothing", "sid-1"])

    assert [(r.sid, r.state, r.upload_progress) for r in rows] == [
        ("sid-2", "unknown", 2), ("nothing", "unknown", None), ("sid-1", "unknown", 1)
    ]  # fmt: skip
    assert session_rows(redis, redis, []) == []
