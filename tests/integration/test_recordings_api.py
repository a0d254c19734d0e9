"""POST /api/v1/recordings and /stop: app servers forward their start and stop calls."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from werkzeug.test import TestResponse

from webhook.app import create_app
from webhook.config import Settings
from webhook.jobs import callback_queue
from webhook.store import keys
from webhook.store.recordings import RecordingStore

TOKEN = "app-server-token"
SID = "38f8e3cfdc474cd56fc1ceba380d7e1a"
START: dict[str, Any] = {
    "resourceId": "JyvK8nXHuV1BE64GDkAaBGEscvtHW7v8BrQoRPCHxmeVxwY22-x-kv4GdPcjZeMzoCBUCOr9q",
    "sid": SID,
    "cname": "class1024",
    "uid": "527841",
    "mode": "individual",
    "clientRequest": {
        "token": "007eJxTYBBbsMfM6k9",
        "recordingConfig": {"maxIdleTime": 120, "streamTypes": 2, "channelType": 1},
        "storageConfig": {
            "vendor": 11, "region": 0, "bucket": "recordings",
            "accessKey": "AKIAEXAMPLEKEY", "secretKey": "very-secret-storage-key",
            "fileNamePrefix": ["recordings", "class1024"],
            "extensionParams": {"endpoint": "https://s3.example.com", "sse": "aes256"},
        },
    },
}  # fmt: skip
STOP: dict[str, Any] = {
    "httpStatus": 200,
    "response": {
        "resourceId": "JyvK8n...",
        "sid": SID,
        "serverResponse": {
            "fileListMode": "json",
            "fileList": [{"fileName": f"{SID}_class1024__uid_s_57297__uid_e_audio.m3u8",
                          "trackType": "audio", "uid": "57297", "mixedAllUser": False,
                          "isPlayable": True, "sliceStartTime": 1749549603089}],
            "uploadingStatus": "backuped",
        },
    },
}  # fmt: skip


@pytest.fixture
def api(settings: Settings, redis: Redis) -> FlaskClient:
    app: Flask = create_app(replace(settings, api_tokens=("other-token", TOKEN)))
    return app.test_client()


def call(api: FlaskClient, path: str, body: Any, token: str | None = TOKEN) -> TestResponse:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return api.post(path, json=body, headers=headers)


class TestTokens:
    def test_without_a_token_the_api_answers_401(self, api: FlaskClient):
        response = call(api, "/api/v1/recordings", START, token=None)

        assert response.status_code == 401
        assert response.get_json()["reason"] == "unauthorized"

    def test_a_wrong_token_is_401(self, api: FlaskClient):
        assert call(api, "/api/v1/recordings", START, token="guess").status_code == 401

    def test_any_configured_token_is_accepted(self, api: FlaskClient):
        assert call(api, "/api/v1/recordings", START, token="other-token").status_code == 201


class TestStart:
    def test_a_start_is_recorded_once_and_reconciled(
        self, api: FlaskClient, redis: Redis, settings: Settings
    ):
        first = call(api, "/api/v1/recordings", START)
        again = call(api, "/api/v1/recordings", START)

        assert (first.status_code, first.get_json()) == (201, {"sid": SID, "result": "recorded"})
        assert (again.status_code, again.get_json()) == (200, {"sid": SID, "result": "unchanged"})
        facts = RecordingStore(redis).facts(SID)
        assert facts.start is not None
        assert facts.start.max_idle_s == 120
        assert callback_queue(redis, settings.queue_name).count == 1
        assert redis.zscore(keys.active_recordings(), SID) is not None

    def test_credentials_in_the_client_request_are_dropped(self, api: FlaskClient, redis: Redis):
        call(api, "/api/v1/recordings", START)

        stored = repr({k: redis.dump(k) for k in redis.scan_iter()})
        for secret in ("very-secret-storage-key", "AKIAEXAMPLEKEY", "007eJxTYBBbsMfM6k9"):
            assert secret not in stored
        facts = RecordingStore(redis).facts(SID)
        assert facts.start is not None
        assert facts.start.storage == {
            "vendor": 11, "region": 0, "bucket": "recordings",
            "fileNamePrefix": ["recordings", "class1024"],
            "extensionParams": {"endpoint": "https://s3.example.com"},
        }  # fmt: skip

    @pytest.mark.parametrize("missing", ["resourceId", "sid", "cname", "uid", "mode"])
    def test_a_start_without_a_required_field_is_400_naming_it(
        self, api: FlaskClient, missing: str
    ):
        body = {k: v for k, v in START.items() if k != missing}

        response = call(api, "/api/v1/recordings", body)

        assert response.status_code == 400
        assert set(response.get_json()["errors"]) == {missing}

    def test_an_unknown_mode_is_400(self, api: FlaskClient):
        response = call(api, "/api/v1/recordings", START | {"mode": "audio-only"})

        assert response.status_code == 400
        assert "mode" in response.get_json()["errors"]

    def test_a_number_beyond_64_bits_is_400_not_a_500(self, api: FlaskClient):
        body = START | {"clientRequest": {"recordingConfig": {"maxIdleTime": 2**64}}}

        response = call(api, "/api/v1/recordings", body)

        assert response.status_code == 400
        assert "clientRequest" in response.get_json()["errors"]

    @pytest.mark.parametrize("depth", [300, 2000])
    def test_a_deeply_nested_body_is_400_saying_so(self, api: FlaskClient, depth: int):
        body = START | {"clientRequest": {"recordingConfig": {"x": "NESTED"}}}
        raw = json.dumps(body).replace('"NESTED"', "[" * depth + "]" * depth)

        response = api.post(
            "/api/v1/recordings", data=raw, content_type="application/json",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )  # fmt: skip

        assert response.status_code == 400
        assert "recursion" in json.dumps(response.get_json()).lower()

    def test_a_body_over_the_limit_is_413(self, api: FlaskClient):
        body = START | {"clientRequest": {"padding": "x" * (300 * 1024)}}

        response = call(api, "/api/v1/recordings", body)

        assert response.status_code == 413
        assert response.get_json()["reason"] == "body_too_large"

    def test_a_body_that_is_not_json_is_415(self, api: FlaskClient):
        response = api.post(
            "/api/v1/recordings", data=json.dumps(START), content_type="text/plain",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )  # fmt: skip

        assert response.status_code == 415

    def test_a_body_that_is_not_an_object_is_400(self, api: FlaskClient):
        response = api.post(
            "/api/v1/recordings", data=b"[1]", content_type="application/json",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )  # fmt: skip

        assert response.status_code == 400


class TestStop:
    def test_a_stop_for_an_unknown_recording_is_404(self, api: FlaskClient):
        response = call(api, f"/api/v1/recordings/{SID}/stop", STOP)

        assert response.status_code == 404
        assert response.get_json()["reason"] == "not_found"

    def test_a_stop_is_recorded_once_with_what_agora_answered(self, api: FlaskClient, redis: Redis):
        call(api, "/api/v1/recordings", START)

        first = call(api, f"/api/v1/recordings/{SID}/stop", STOP)
        again = call(api, f"/api/v1/recordings/{SID}/stop", STOP | {"httpStatus": 206})

        assert first.get_json() == {"sid": SID, "result": "recorded"}
        assert (again.status_code, again.get_json()["result"]) == (200, "unchanged")
        facts = RecordingStore(redis).facts(SID)
        assert facts.stop is not None
        assert facts.stop.http_status == 200
        assert facts.stop.uploading_status == "backuped"
        assert facts.stop.file_names == (f"{SID}_class1024__uid_s_57297__uid_e_audio.m3u8",)
        endpoints = [c["endpoint"] for c in RecordingStore(redis).calls(SID)]
        assert endpoints == ["start", "stop"]

    def test_the_answer_to_a_retried_stop_replaces_one_that_could_not_say(
        self, api: FlaskClient, redis: Redis
    ):
        call(api, "/api/v1/recordings", START)
        not_completed = {"httpStatus": 206, "response": {"code": 65}}

        first = call(api, f"/api/v1/recordings/{SID}/stop", not_completed)
        same_again = call(api, f"/api/v1/recordings/{SID}/stop", not_completed)
        retried = call(api, f"/api/v1/recordings/{SID}/stop", STOP)
        late_206 = call(api, f"/api/v1/recordings/{SID}/stop", not_completed)

        answers = [r.get_json()["result"] for r in (first, same_again, retried, late_206)]
        assert answers == ["recorded", "unchanged", "recorded", "unchanged"]
        facts = RecordingStore(redis).facts(SID)
        assert facts.stop is not None
        assert (facts.stop.http_status, facts.stop.uploading_status) == (200, "backuped")
        endpoints = [c["endpoint"] for c in RecordingStore(redis).calls(SID)]
        assert endpoints == ["start", "stop", "stop"]

    def test_a_206_with_435_is_read_as_nothing_recorded(self, api: FlaskClient, redis: Redis):
        call(api, "/api/v1/recordings", START)

        nothing = {"httpStatus": 206, "response": {"code": 435, "reason": "no recorded data"}}
        call(api, f"/api/v1/recordings/{SID}/stop", nothing)

        facts = RecordingStore(redis).facts(SID)
        assert facts.stop is not None
        assert facts.stop.nothing_recorded

    def test_a_stop_without_http_status_is_400(self, api: FlaskClient):
        call(api, "/api/v1/recordings", START)

        response = call(api, f"/api/v1/recordings/{SID}/stop", {"response": {}})

        assert response.status_code == 400
        assert set(response.get_json()["errors"]) == {"httpStatus"}
