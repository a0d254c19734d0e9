"""POST /agora/callback against a real redis-server: what Agora sees, and what we keep."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from flask.testing import FlaskClient
from redis import Redis

from tests.conftest import OLD_SECRET, SECRET, PostCallback, example_files, load_example, varied
from webhook.app import create_app
from webhook.config import Settings
from webhook.jobs import callback_job_id, callback_queue
from webhook.signature import HEADER_V1, HEADER_V2, sign
from webhook.store import CallbackStore
from workers.relay import relay_handoffs

SID = "38f8e3cfdc474cd56fc1ceba380d7e1a"


def store_of(client: FlaskClient) -> CallbackStore:
    store: CallbackStore = client.application.extensions["agora.store"]
    return store


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.stem)
def test_every_documented_event_is_stored_and_readable(
    post_callback: PostCallback, client: FlaskClient, path: Any
) -> None:
    raw = path.read_bytes()
    body = json.loads(raw)

    response = post_callback(raw)

    assert response.status_code == 200
    assert response.get_json() == {"result": "stored"}
    sid = body["payload"]["sid"]
    (event,) = store_of(client).events(sid)
    assert event.body == raw
    assert event.notice_id == body["noticeId"]
    assert event.event_type == body["eventType"]
    assert event.errors == {}
    summary = store_of(client).session(sid)
    assert summary is not None
    assert summary.counts == {body["eventType"]: 1}
    assert summary.invalid == 0


def test_the_same_notice_twice_is_stored_once(post_callback: PostCallback, client: FlaskClient):
    body = load_example("33_")

    first = post_callback(body)
    again = post_callback(body | {"notifyMs": body["notifyMs"] + 1500})  # Agora's resend

    assert first.get_json() == {"result": "stored"}
    assert again.status_code == 200
    assert again.get_json() == {"result": "duplicate"}
    assert len(store_of(client).events(SID)) == 1
    summary = store_of(client).session(SID)
    assert summary is not None
    assert summary.events == 1
    assert summary.duplicates == 1


def test_a_redundant_copy_is_logged_flagged_and_not_counted(
    post_callback: PostCallback, client: FlaskClient
):
    original = load_example("31_")
    copy = original | {"noticeId": "f" * 32}

    post_callback(original)
    response = post_callback(copy)

    assert response.get_json() == {"result": "duplicate", "duplicate_of": original["noticeId"]}
    logged = store_of(client).events(SID)
    assert [e.redundant_of for e in logged] == [None, original["noticeId"]]
    summary = store_of(client).session(SID)
    assert summary is not None
    assert summary.counts == {31: 1}
    assert summary.redundant == 1


def test_a_copy_from_a_failed_over_recorder_is_a_distinct_event(
    post_callback: PostCallback, client: FlaskClient
):
    original = load_example("33_")
    failed_over = varied(original, notice_id="a" * 32, uid="3957220413")

    post_callback(original)
    response = post_callback(failed_over)

    assert response.get_json() == {"result": "stored"}
    summary = store_of(client).session(SID)
    assert summary is not None
    assert summary.counts == {33: 2}


def test_concurrent_duplicates_are_stored_once(app: Any, redis: Redis) -> None:
    raw = json.dumps(load_example("32_")).encode()
    headers = {"Content-Type": "application/json", HEADER_V2: sign(raw, SECRET)}
    answers: list[dict[str, Any]] = []
    barrier = threading.Barrier(8)

    def deliver() -> None:
        client = app.test_client()
        barrier.wait()
        answers.append(client.post("/agora/callback", data=raw, headers=headers).get_json())

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(a["result"] for a in answers) == ["duplicate"] * 7 + ["stored"]
    assert redis.xlen(f"agora:{{{SID}}}:events") == 1


def test_top_level_sid_may_be_absent(post_callback: PostCallback, client: FlaskClient):
    body = load_example("40_")
    del body["sid"]

    response = post_callback(body)

    assert response.get_json() == {"result": "stored"}
    assert len(store_of(client).events(SID)) == 1


class TestSignatures:
    def test_a_callback_signed_with_the_previous_secret_is_accepted(
        self, post_callback: PostCallback
    ):
        assert post_callback(load_example("40_"), secret=OLD_SECRET).status_code == 200

    def test_unsigned_callback_gets_401_and_is_kept_in_rejected(
        self, post_callback: PostCallback, client: FlaskClient
    ):
        response = post_callback(load_example("40_"), secret=None)

        assert response.status_code == 401
        assert response.get_json()["reason"] == "signature_missing"
        (kept,) = store_of(client).rejected()
        assert kept.reason == "signature_missing"
        assert kept.status == 401

    def test_a_wrong_signature_gets_401(self, post_callback: PostCallback, client: FlaskClient):
        response = post_callback(load_example("40_"), secret="not-our-secret")

        assert response.status_code == 401
        body = response.get_json()
        assert body["reason"] == "signature_mismatch"
        assert body["code"] == 401
        assert body["status"] == "Unauthorized"
        assert store_of(client).events(SID) == []

    def test_the_sha1_signature_is_used_when_v2_is_absent(self, post_callback: PostCallback):
        raw = json.dumps(load_example("40_")).encode()

        response = post_callback(raw, secret=None, headers={HEADER_V1: sign(raw, SECRET, "sha1")})

        assert response.status_code == 200

    def test_a_good_sha1_does_not_rescue_a_wrong_v2(self, post_callback: PostCallback):
        raw = json.dumps(load_example("40_")).encode()
        headers = {HEADER_V1: sign(raw, SECRET, "sha1"), HEADER_V2: sign(raw, "wrong")}

        response = post_callback(raw, secret=None, headers=headers)

        assert response.status_code == 401

    def test_uppercase_hex_is_accepted(self, post_callback: PostCallback):
        raw = json.dumps(load_example("40_")).encode()

        response = post_callback(raw, secret=None, headers={HEADER_V2: sign(raw, SECRET).upper()})

        assert response.status_code == 200

    def test_development_without_secrets_accepts_unsigned_callbacks(
        self, settings: Settings, redis: Redis
    ):
        dev = Settings(redis_url=settings.redis_url, environment="development")
        client = create_app(dev).test_client()

        response = client.post("/agora/callback", json=load_example("40_"))

        assert response.status_code == 200


class TestBadInput:
    def test_a_body_that_is_not_json_gets_400(self, post_callback: PostCallback):
        response = post_callback(b"{not json")

        assert response.status_code == 400
        body = response.get_json()
        assert body["reason"] == "invalid_payload"
        assert "not valid JSON" in body["message"]

    def test_a_json_array_gets_400(self, post_callback: PostCallback):
        response = post_callback(b"[1, 2]")

        assert response.status_code == 400
        assert "JSON object" in response.get_json()["message"]

    @pytest.mark.parametrize(
        ("remove", "named"),
        [
            (("noticeId",), {"noticeId"}),
            (("eventType",), {"eventType"}),
            (("payload", "sid"), {"payload"}),
            (("payload",), {"payload"}),
        ],
    )
    def test_a_callback_without_its_identity_gets_400_naming_the_field(
        self, post_callback: PostCallback, remove: tuple[str, ...], named: set[str]
    ):
        body = load_example("40_")
        target = body
        for key in remove[:-1]:
            target = target[key]
        del target[remove[-1]]

        response = post_callback(body)

        assert response.status_code == 400
        errors = response.get_json()["errors"]
        assert set(errors) == named
        if remove == ("payload", "sid"):
            assert "sid" in errors["payload"]

    def test_a_string_event_type_gets_400(self, post_callback: PostCallback):
        response = post_callback(load_example("40_") | {"eventType": "40"})

        assert response.status_code == 400
        assert set(response.get_json()["errors"]) == {"eventType"}

    def test_a_non_json_content_type_gets_415(self, post_callback: PostCallback):
        response = post_callback(load_example("40_"), headers={"Content-Type": "text/plain"})

        assert response.status_code == 415
        assert response.get_json()["reason"] == "unsupported_media_type"

    def test_a_body_over_the_limit_gets_413_and_is_kept_truncated(
        self, post_callback: PostCallback, client: FlaskClient, settings: Settings
    ):
        body = load_example("40_")
        body["payload"]["details"]["padding"] = "x" * settings.max_body_bytes

        response = post_callback(body)

        assert response.status_code == 413
        assert response.get_json()["reason"] == "body_too_large"
        (kept,) = store_of(client).rejected()
        assert kept.body_truncated
        assert len(kept.body) == settings.max_body_bytes

    def test_get_is_405_with_a_json_body(self, client: FlaskClient):
        response = client.get("/agora/callback")

        assert response.status_code == 405
        assert response.get_json()["reason"] == "method_not_allowed"
        assert "POST" in response.headers["Allow"]

    def test_an_unknown_path_is_404_with_a_json_body(self, client: FlaskClient):
        response = client.post("/agora/other", json={})

        assert response.status_code == 404
        assert response.get_json()["code"] == 404

    def test_a_refused_callback_is_kept_with_reason_address_and_replay_headers(
        self, post_callback: PostCallback, client: FlaskClient
    ):
        raw = json.dumps(load_example("40_")).encode()

        post_callback(raw, secret="wrong", headers={"Authorization": "Bearer do-not-keep"})

        (kept,) = store_of(client).rejected()
        assert kept.reason == "signature_mismatch"
        assert kept.remote_addr == "127.0.0.1"
        assert kept.body == raw
        assert kept.headers[HEADER_V2] == sign(raw, "wrong")
        assert "Authorization" not in kept.headers
        assert store_of(client).stats()["rejected:signature_mismatch"] == 1

    def test_the_rejected_store_is_capped(
        self, post_callback: PostCallback, client: FlaskClient, settings: Settings
    ):
        for _ in range(settings.rejected_max + 10):
            post_callback(b"[]")

        assert len(store_of(client).rejected(count=1000)) == settings.rejected_max
        assert store_of(client).stats()["rejected:invalid_payload"] == settings.rejected_max + 10

    def test_no_secret_appears_in_any_answer_or_in_redis(
        self, post_callback: PostCallback, redis: Redis
    ):
        answers = [
            post_callback(load_example("40_"), secret="wrong").get_data(),
            post_callback(b"nope").get_data(),
            post_callback(load_example("31_")).get_data(),
        ]

        dump = b"".join(answers)
        for key in redis.scan_iter():
            dump += repr(redis.dump(key)).encode()
        assert SECRET.encode() not in dump
        assert OLD_SECRET.encode() not in dump


class TestValidation:
    def test_an_unknown_event_type_is_stored_and_counted(
        self, post_callback: PostCallback, client: FlaskClient
    ):
        body = load_example("40_") | {"eventType": 13}

        response = post_callback(body)

        assert response.get_json() == {"result": "stored"}
        summary = store_of(client).session(SID)
        assert summary is not None
        assert summary.unknown_type == 1
        assert store_of(client).stats()["unknown_type"] == 1

    def test_details_that_fail_their_schema_are_stored_with_the_errors(
        self, post_callback: PostCallback, client: FlaskClient
    ):
        body = load_example("33_")
        body["payload"]["details"]["progress"] = "most of it"

        response = post_callback(body)

        assert response.get_json() == {"result": "stored"}
        (event,) = store_of(client).events(SID)
        assert event.errors == {"payload": {"details": {"progress": ["Not a valid integer."]}}}
        summary = store_of(client).session(SID)
        assert summary is not None
        assert summary.invalid == 1
        assert summary.upload_progress is None

    @pytest.mark.parametrize(("prefix", "field"), [("33_", "progress"), ("31_", "status")])
    def test_a_boolean_where_a_number_belongs_is_stored_flagged_not_refused(
        self, post_callback: PostCallback, client: FlaskClient, prefix: str, field: str
    ):
        body = load_example(prefix)
        body["payload"]["details"][field] = False

        response = post_callback(body)

        assert response.get_json() == {"result": "stored"}
        (event,) = store_of(client).events(SID)
        assert set(event.errors["payload"]["details"]) == {field}
        summary = store_of(client).session(SID)
        assert summary is not None
        assert summary.upload_progress is None
        assert summary.upload_ok is None

    def test_a_number_string_beyond_64_bits_is_stored_flagged_not_a_server_error(
        self, post_callback: PostCallback, client: FlaskClient
    ):
        body = load_example("31_")
        body["payload"]["details"]["fileList"][0]["sliceStartTime"] = "1" * 25

        response = post_callback(body)

        assert response.get_json() == {"result": "stored"}
        (event,) = store_of(client).events(SID)
        assert set(event.errors["payload"]["details"]["fileList"]["0"]) == {"sliceStartTime"}

    def test_a_wrong_envelope_field_is_flagged_but_the_event_still_counts(
        self, post_callback: PostCallback, client: FlaskClient
    ):
        body = varied(load_example("33_"), sendts="yesterday")

        post_callback(body)

        (event,) = store_of(client).events(SID)
        assert "sendts" in event.errors["payload"]
        summary = store_of(client).session(SID)
        assert summary is not None
        assert summary.counts == {33: 1}


def legacy(prefix: str, notification_id: str) -> dict[str, Any]:
    """An example as RESTful API 1.2.0 and earlier sent it (FACTS §2.2): notificationId,
    eventMs, no productId, sequence as a string, noticeLevel."""
    body = load_example(prefix)
    body.pop("noticeId")
    body.pop("productId")
    body.pop("sid")
    payload = body["payload"]
    payload.pop("serviceScene", None)
    payload.update(sequence=str(payload["sequence"]), noticeLevel=2)
    return {"notificationId": notification_id, "eventMs": payload["sendts"]} | body


class TestLegacyFormat:
    def test_a_legacy_callback_is_stored_valid_deduplicated_and_followed_up(
        self, post_callback: PostCallback, client: FlaskClient, redis: Redis
    ):
        body = legacy("31_", "4eb720f0-8da7-11e9-a43e-53f411c2761f")
        raw = json.dumps(body).encode()
        v1_only = {HEADER_V1: sign(raw, SECRET, "sha1")}  # the legacy service signed SHA-1 only

        first = post_callback(raw, secret=None, headers=v1_only)
        again = post_callback(raw, secret=None, headers=v1_only)

        assert (first.status_code, first.get_json()) == (200, {"result": "stored"})
        assert again.get_json() == {"result": "duplicate"}
        (event,) = store_of(client).events(SID)
        assert (event.notice_id, event.sequence, event.errors) == (body["notificationId"], 23, {})
        assert redis.zcard("agora:handoffs:pending") == 1

    def test_neither_id_is_a_400_naming_both(self, post_callback: PostCallback):
        body = legacy("40_", "x")
        body.pop("notificationId")

        response = post_callback(body)

        assert response.status_code == 400
        assert "notificationId" in response.get_json()["errors"]["noticeId"][0]


class TestHandoff:
    def test_an_upload_event_is_handed_off_with_its_write_and_the_relay_makes_one_job(
        self, post_callback: PostCallback, redis: Redis, settings: Settings, run_jobs: Any
    ):
        body = load_example("32_")

        post_callback(body)
        post_callback(body)

        queue = callback_queue(redis, settings.queue_name)
        assert queue.count == 0  # the callback's answer never waits for RQ
        assert redis.zcard("agora:handoffs:pending") == 1
        assert redis.llen("agora:handoffs:ready") >= 1
        assert relay_handoffs(CallbackStore(redis), queue) >= 1
        assert queue.job_ids == [callback_job_id(SID, body["noticeId"])]
        assert run_jobs() == 1
        assert redis.zcard("agora:handoffs:pending") == 0

    def test_a_progress_tick_hands_off_nothing(
        self, post_callback: PostCallback, redis: Redis, settings: Settings
    ):
        post_callback(load_example("33_"))

        assert callback_queue(redis, settings.queue_name).count == 0
        assert redis.zcard("agora:handoffs:pending") == 0
        assert redis.llen("agora:handoffs:ready") == 0

    def test_a_resend_re_enqueues_a_hand_off_whose_job_vanished(
        self, post_callback: PostCallback, redis: Redis, settings: Settings, run_jobs: Any
    ):
        body = load_example("11_")
        post_callback(body)
        queue = callback_queue(redis, settings.queue_name)
        relay_handoffs(CallbackStore(redis), queue)
        queue.empty()  # type: ignore[no-untyped-call]  # rq leaves it unannotated; as if the job had been lost

        response = post_callback(body)

        assert response.get_json() == {"result": "duplicate"}
        assert run_jobs() == 1
        post_callback(body)
        assert redis.llen("agora:handoffs:ready") == 0
        assert run_jobs() == 0


def test_retention_ttls_are_set_on_every_session_key(
    post_callback: PostCallback, redis: Redis, settings: Settings
):
    post_callback(load_example("33_"))

    retention = settings.retention.total_seconds()
    for key in redis.scan_iter(f"agora:{{{SID}}}:*"):
        ttl = redis.ttl(key)
        assert 0 < ttl <= max(retention, settings.dedupe_window.total_seconds()), key
    cname_ttl = redis.ttl("agora:cname:class1024")
    assert 0 < cname_ttl <= retention


def test_health_and_readiness(client: FlaskClient):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json()["redis"] == "ok"
