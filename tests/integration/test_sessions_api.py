"""GET /api/v1/recordings, /<sid> and /<sid>/events: what happened to a recording."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from flask.testing import FlaskClient
from redis import Redis

from tests.conftest import load_example, varied
from tests.integration.test_recordings_api import START
from webhook.app import create_app
from webhook.config import Settings
from webhook.recordings import StartCall
from webhook.schemas import load_callback
from webhook.store import CallbackStore
from webhook.store.recordings import RecordingStore

TOKEN = "ops-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
T0 = 1_749_549_600_000


@pytest.fixture
def api(settings: Settings, redis: Redis) -> FlaskClient:
    return create_app(replace(settings, api_tokens=(TOKEN,))).test_client()


def deliver(redis: Redis, body: dict[str, Any], received_ms: int) -> None:
    CallbackStore(redis).record(load_callback(body), json.dumps(body).encode(),
                                received_ms=received_ms)  # fmt: skip


def session(redis: Redis, sid: str, cname: str, at: int) -> None:
    body = varied(load_example("40_"), sid=sid, cname=cname, notice_id=f"{sid}-40")
    deliver(redis, body, at)


def get(api: FlaskClient, path: str) -> Any:
    response = api.get(path, headers=AUTH)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


class TestList:
    def test_sessions_come_newest_first_in_pages(self, api: FlaskClient, redis: Redis):
        for n in range(3):
            session(redis, f"sid-{n}", "room", T0 + n * 1000)

        first = get(api, "/api/v1/recordings?limit=2")
        second = get(api, f"/api/v1/recordings?limit=2&cursor={first['next_cursor']}")

        assert [r["sid"] for r in first["recordings"]] == ["sid-2", "sid-1"]
        assert [r["sid"] for r in second["recordings"]] == ["sid-0"]
        assert second["next_cursor"] is None

    @pytest.mark.parametrize("state", [None, "recording"])
    def test_pages_reach_every_session_of_one_millisecond(
        self, api: FlaskClient, redis: Redis, state: str | None
    ):
        # More sessions with one score than twice the page: the run of equal scores used
        # to end the listing after the first two pages.
        for n in range(7):
            session(redis, f"sid-{n}", "room", T0)
            RecordingStore(redis).set_state(f"sid-{n}", "recording", T0)
        query = "limit=1" + (f"&state={state}" if state else "")

        seen, cursor = [], ""
        for _ in range(10):
            page = get(api, f"/api/v1/recordings?{query}{cursor}")
            seen += [r["sid"] for r in page["recordings"]]
            if page["next_cursor"] is None:
                break
            cursor = f"&cursor={page['next_cursor']}"

        assert seen == [f"sid-{n}" for n in reversed(range(7))]

    def test_filters_by_channel_and_time(self, api: FlaskClient, redis: Redis):
        session(redis, "a", "room-a", T0)
        session(redis, "b", "room-b", T0 + 5000)

        by_channel = get(api, "/api/v1/recordings?cname=room-a")["recordings"]
        recent = get(api, f"/api/v1/recordings?since={T0 + 1000}")["recordings"]

        assert [r["sid"] for r in by_channel] == ["a"]
        assert [r["sid"] for r in recent] == ["b"]

    def test_a_session_known_only_from_the_app_s_start_is_listed_and_filtered(
        self, api: FlaskClient, redis: Redis
    ):
        session(redis, "heard-from", "room-a", T0)
        started = START | {"sid": "never-heard-from", "cname": "room-a"}
        answer = api.post("/api/v1/recordings", json=started, headers=AUTH)
        assert answer.status_code == 201

        listed = get(api, "/api/v1/recordings")["recordings"]
        by_channel = get(api, "/api/v1/recordings?cname=room-a")["recordings"]

        assert [r["sid"] for r in listed] == ["never-heard-from", "heard-from"]
        assert [r["sid"] for r in by_channel] == ["never-heard-from", "heard-from"]
        assert listed[0]["cname"] == "room-a"

    def test_filters_by_state_from_its_index(self, api: FlaskClient, redis: Redis):
        session(redis, "a", "room", T0)
        session(redis, "b", "room", T0 + 1000)
        RecordingStore(redis).set_state("a", "backuped", T0 + 2000)

        rows = get(api, "/api/v1/recordings?state=backuped")["recordings"]

        assert [(r["sid"], r["state"]) for r in rows] == [("a", "backuped")]

    @pytest.mark.parametrize(
        ("query", "named"),
        [("state=burning", "state"), ("limit=0", "limit"), ("cursor=nonsense", "cursor"),
         ("since=-5", "since"),
         # Digits str.isdigit() takes and int() does not: a superscript, more than 4300.
         ("cursor=%C2%B2.sid-1", "cursor"), (f"cursor={'9' * 5000}.sid-1", "cursor"),
         # Beyond any Unix-ms score: not a cursor this API returned either.
         (f"cursor={'9' * 400}.sid-1", "cursor")],
    )  # fmt: skip
    def test_a_bad_filter_is_400_naming_the_parameter(
        self, api: FlaskClient, query: str, named: str
    ):
        response = api.get(f"/api/v1/recordings?{query}", headers=AUTH)

        assert response.status_code == 400
        assert response.get_json()["reason"] == "invalid_query"
        assert set(response.get_json()["errors"]) == {named}


class TestDetail:
    def test_an_unknown_sid_is_404(self, api: FlaskClient):
        response = api.get("/api/v1/recordings/nothing-here", headers=AUTH)

        assert response.status_code == 404
        assert response.get_json()["reason"] == "not_found"

    def test_one_recording_shows_summary_calls_state_and_files(
        self, api: FlaskClient, redis: Redis
    ):
        sid = "38f8e3cfdc474cd56fc1ceba380d7e1a"
        RecordingStore(redis).record_start(sid, StartCall(
            "rid", "class1024", "527841", "individual",
            {"storageConfig": {"vendor": 1, "region": 0, "bucket": "b"}}, T0,
        ))  # fmt: skip
        deliver(redis, load_example("31_"), T0 + 60_000)

        shown = get(api, f"/api/v1/recordings/{sid}")

        assert shown["cname"] == "class1024"
        assert shown["upload_status"] == "uploaded"
        assert shown["start"]["storage"] == {"vendor": 1, "region": 0, "bucket": "b"}
        assert [c["endpoint"] for c in shown["calls"]] == ["start"]
        assert len(shown["summary"]["files"]) == 4
        assert shown["alerts"] == []


class TestEvents:
    def test_the_timeline_is_ordered_by_sequence_with_arrival_order_and_gaps(
        self, api: FlaskClient, redis: Redis
    ):
        sid = "38f8e3cfdc474cd56fc1ceba380d7e1a"
        later = load_example("33_")  # sequence 12
        earlier = load_example("40_")  # sequence 0
        deliver(redis, later, T0 + 2000)
        deliver(redis, earlier, T0 + 3000)
        deliver(redis, later | {"noticeId": "f" * 32}, T0 + 4000)  # a redundant copy
        deliver(redis, later, T0 + 5000)  # Agora's resend

        timeline = get(api, f"/api/v1/recordings/{sid}/events")

        assert [(e["sequence"], e["arrival_index"]) for e in timeline["events"]] == [
            (0, 1), (12, 0), (12, 2),
        ]  # fmt: skip
        assert timeline["events"][0]["msg_name"] == "recorder_started"
        assert timeline["events"][2]["redundant_of"] == later["noticeId"]
        assert timeline["missing_sequences"] == list(range(1, 12))
        assert timeline["duplicates_received"] == 1
        assert timeline["redundant_copies"] == 1

    def test_events_of_an_unknown_sid_are_404(self, api: FlaskClient):
        assert api.get("/api/v1/recordings/nobody/events", headers=AUTH).status_code == 404
