"""The Console's Check button: its test callbacks (channel test_webhook, uid 12121212, one
per subscribed event) get their 200 and are kept like any callback, but no recording ran,
so no worker follows them up: a Check never raises an alert or reaches an alert sink.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from flask.testing import FlaskClient
from redis import Redis

from tests.conftest import PostCallback, example_files, load_example, varied
from webhook.config import Settings
from webhook.events import FOLLOW_UP_EVENTS
from webhook.jobs import enqueue_callback
from webhook.schemas import load_callback
from webhook.store import CallbackStore, keys, now_ms
from webhook.store.alerts import AlertStore
from workers.callbacks import follow_up_callback
from workers.context import build_context, configure

TOKEN = "ops-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TEST_SID = "console-check-sid"
REAL_SID = "38f8e3cfdc474cd56fc1ceba380d7e1a"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, api_tokens=(TOKEN,))


def console_test(prefix: str, *, uid: str | int = "12121212") -> dict[str, Any]:
    """An example body as the Console's Check sends it."""
    body = varied(load_example(prefix), sid=TEST_SID, cname="test_webhook", uid=uid,
                  notice_id=f"console-{prefix}{uid}")  # fmt: skip
    return body


def every_example_prefix() -> list[str]:
    return [path.name.split("_")[0] + "_" for path in example_files()]


def test_every_test_callback_is_stored_and_none_is_handed_to_a_worker(
    post_callback: PostCallback, redis: Redis, run_jobs: Callable[[], int]
):
    answers = [post_callback(console_test(prefix)) for prefix in every_example_prefix()]

    assert {(a.status_code, a.get_json()["result"]) for a in answers} == {(200, "stored")}
    store = CallbackStore(redis)
    assert len(store.events(TEST_SID)) == len(answers)
    assert redis.zcard(keys.pending_handoffs()) == 0
    assert redis.llen(keys.ready_handoffs()) == 0
    assert run_jobs() == 0
    assert AlertStore(redis).for_session(TEST_SID) == []


def test_a_numeric_uid_is_recognised_too(post_callback: PostCallback, redis: Redis):
    post_callback(console_test("32_", uid=12121212))

    assert redis.zcard(keys.pending_handoffs()) == 0


@pytest.mark.parametrize(("cname", "uid"), [("test_webhook", "527841"), ("class1024", "12121212")])
def test_only_the_channel_and_uid_together_make_a_test(
    post_callback: PostCallback, redis: Redis, cname: str, uid: str
):
    post_callback(varied(load_example("32_"), cname=cname, uid=uid))

    assert redis.zcard(keys.pending_handoffs()) == 1


def test_the_api_and_the_dashboard_say_which_sessions_are_console_tests(
    post_callback: PostCallback, client: FlaskClient
):
    post_callback(console_test("32_"))
    post_callback(load_example("32_"))

    listed = client.get("/api/v1/recordings", headers=AUTH).get_json()["recordings"]
    detail = client.get(f"/api/v1/recordings/{TEST_SID}", headers=AUTH).get_json()
    real = client.get(f"/api/v1/recordings/{REAL_SID}", headers=AUTH).get_json()

    assert {r["sid"]: r["console_test"] for r in listed} == {TEST_SID: True, REAL_SID: False}
    assert detail["console_test"] is True
    assert real["console_test"] is False
    client.post("/dashboard/login", data={"token": TOKEN, "next": "/dashboard/"})
    page = client.get("/dashboard/sessions").text
    test_row = page[page.index(f'data-sid="{TEST_SID}"') :].split("</tr>")[0]
    real_row = page[page.index(f'data-sid="{REAL_SID}"') :].split("</tr>")[0]
    assert "Console test" in test_row
    assert "Console test" not in real_row
    assert "Console test" in client.get(f"/dashboard/sessions/{TEST_SID}").text


def test_a_hand_off_an_older_version_made_is_completed_without_an_alert(
    settings: Settings, redis: Redis
):
    # Before the web side knew test callbacks, their follow-up events were handed off.
    configure(settings)
    ctx = build_context(settings, redis)
    body = console_test("01_")  # an error event: a real one raises recording_error
    assert body["eventType"] in FOLLOW_UP_EVENTS
    result = ctx.callbacks.record(load_callback(body), json.dumps(body).encode(),
                                  received_ms=now_ms())  # fmt: skip
    member = keys.handoff_member(TEST_SID, body["noticeId"], result.entry_id)
    redis.zadd(keys.pending_handoffs(), {member: now_ms()})
    enqueue_callback(ctx.queue, TEST_SID, body["noticeId"], result.entry_id)

    follow_up_callback(ctx, TEST_SID, body["noticeId"], result.entry_id, now_ms())

    assert ctx.alerts.for_session(TEST_SID) == []
    assert redis.zcard(keys.pending_handoffs()) == 0
