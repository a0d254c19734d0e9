"""Replays: a captured signed callback sent again later is never stored twice.

Inside the notifyMs age window the noticeId dedupe answers "duplicate"; beyond it the age
check refuses the body (400, kept like every refusal). Settings.from_env makes the dedupe
window cover the whole age window, and the store keeps a noticeId that long whatever the
TTL drift. "Later" is the view's clock, moved forward; Redis is real.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

import pytest
from flask.testing import FlaskClient
from redis import Redis
from werkzeug.test import TestResponse

from tests.conftest import SECRET, load_example
from webhook.app import create_app
from webhook.config import Settings
from webhook.redis_server import RedisServer
from webhook.schemas import load_callback
from webhook.signature import HEADER_V2, sign
from webhook.store import CallbackStore, keys, now_ms
from webhook.views import callbacks as callbacks_view

SID = "38f8e3cfdc474cd56fc1ceba380d7e1a"
TOKEN = "ops-token-for-replays"
HOUR_MS = 3_600_000
MINUTE_MS = 60_000

Clock = Callable[[int], None]


@pytest.fixture
def production(redis_server: RedisServer, redis: Redis) -> Settings:
    """What a production start with nothing but a secret gives: the real defaults."""
    settings = Settings.from_env(
        {
            "APP_ENV": "production",
            "AGORA_CALLBACK_SECRETS": SECRET,
            "REDIS_URL": redis_server.url,
            "LOG_FORMAT": "text",
            "API_TOKENS": TOKEN,
        }
    )
    assert settings.max_notify_age is not None
    return settings


@pytest.fixture
def client(production: Settings) -> FlaskClient:
    return create_app(production).test_client()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Move the endpoint's clock (arrival time) to a given epoch ms."""

    def set_to(ms: int) -> None:
        monkeypatch.setattr(callbacks_view, "now_ms", lambda: ms)

    return set_to


def signed(notify_ms: int, prefix: str = "33_") -> bytes:
    """An example body as Agora sends it: notifyMs stamped on this attempt."""
    return json.dumps(load_example(prefix) | {"notifyMs": notify_ms}).encode()


def post(client: FlaskClient, raw: bytes, secret: str = SECRET) -> TestResponse:
    headers = {"Content-Type": "application/json", HEADER_V2: sign(raw, secret)}
    return client.post("/agora/callback", data=raw, headers=headers)


def store_of(client: FlaskClient) -> CallbackStore:
    store: CallbackStore = client.application.extensions["agora.store"]
    return store


class TestAgeWindow:
    def test_the_production_defaults_hold_the_replay_guarantee(self, production: Settings):
        assert production.max_notify_age == timedelta(days=1)
        assert production.notify_clock_skew == timedelta(minutes=5)
        assert production.dedupe_window >= production.max_notify_age + production.notify_clock_skew

    def test_a_fresh_callback_is_stored(self, client: FlaskClient):
        response = post(client, signed(now_ms()))

        assert response.get_json() == {"result": "stored"}

    def test_a_callback_older_than_the_window_is_refused_and_kept(
        self, client: FlaskClient, production: Settings
    ):
        assert production.max_notify_age is not None
        stale = now_ms() - int(production.max_notify_age.total_seconds() * 1000) - MINUTE_MS
        raw = signed(stale)

        response = post(client, raw)

        assert response.status_code == 400
        assert response.get_json()["reason"] == "notify_ms_too_old"
        assert store_of(client).events(SID) == []
        (kept,) = store_of(client).rejected()
        assert (kept.reason, kept.status, kept.body) == ("notify_ms_too_old", 400, raw)
        assert kept.headers[HEADER_V2] == sign(raw, SECRET)
        assert store_of(client).stats()["rejected:notify_ms_too_old"] == 1

    def test_a_callback_from_beyond_the_clock_skew_is_refused(
        self, client: FlaskClient, production: Settings
    ):
        ahead = now_ms() + int(production.notify_clock_skew.total_seconds() * 1000) + MINUTE_MS

        response = post(client, signed(ahead))

        assert response.status_code == 400
        assert response.get_json()["reason"] == "notify_ms_in_future"
        assert store_of(client).rejected()[0].reason == "notify_ms_in_future"
        assert store_of(client).events(SID) == []

    @pytest.mark.parametrize("edge", ["oldest", "newest"])
    def test_the_edges_of_the_window_are_accepted(
        self, client: FlaskClient, production: Settings, clock: Clock, edge: str
    ):
        assert production.max_notify_age is not None
        arrival = now_ms()
        clock(arrival)
        if edge == "oldest":
            notify_ms = arrival - int(production.max_notify_age.total_seconds() * 1000)
        else:
            notify_ms = arrival + int(production.notify_clock_skew.total_seconds() * 1000)

        assert post(client, signed(notify_ms)).get_json() == {"result": "stored"}

    def test_the_age_is_judged_only_once_the_signature_holds(self, client: FlaskClient):
        response = post(client, signed(now_ms() - 30 * 24 * HOUR_MS), secret="not-ours")

        assert response.get_json()["reason"] == "signature_mismatch"

    def test_a_callback_without_an_integer_notify_ms_is_stored_flagged(self, client: FlaskClient):
        body = load_example("33_")
        del body["notifyMs"]

        response = post(client, json.dumps(body).encode())

        assert response.get_json() == {"result": "stored"}
        (event,) = store_of(client).events(SID)
        assert "notifyMs" in event.errors

    def test_development_without_a_secret_does_not_judge_unsigned_notify_ms(
        self, settings: Settings, redis: Redis
    ):
        dev = Settings(
            redis_url=settings.redis_url,
            environment="development",
            max_notify_age=timedelta(hours=1),
        )
        client = create_app(dev).test_client()

        response = client.post("/agora/callback", json=load_example("33_"))  # notifyMs of 2025

        assert response.get_json() == {"result": "stored"}


class TestReplay:
    def test_a_captured_callback_sent_again_later_is_stored_once(
        self, client: FlaskClient, production: Settings, clock: Clock, redis: Redis
    ):
        assert production.max_notify_age is not None
        age_ms = int(production.max_notify_age.total_seconds() * 1000)
        sent_at = now_ms()
        captured = signed(sent_at)
        clock(sent_at + 150)
        assert post(client, captured).get_json() == {"result": "stored"}

        answers = []
        for later in (MINUTE_MS, HOUR_MS, age_ms - MINUTE_MS, age_ms + MINUTE_MS, 8 * 24 * HOUR_MS):
            clock(sent_at + later)
            response = post(client, captured)
            answers.append(response.get_json().get("result") or response.get_json()["reason"])

        assert answers == ["duplicate"] * 3 + ["notify_ms_too_old"] * 2
        assert len(store_of(client).events(SID)) == 1
        summary = store_of(client).session(SID)
        assert summary is not None
        assert (summary.events, summary.duplicates) == (1, 3)
        # The dedupe index outlives every replay the age check lets through.
        needed = production.max_notify_age + production.notify_clock_skew
        assert redis.ttl(keys.notices(SID)) > needed.total_seconds()

    def test_agoras_resend_with_a_fresh_notify_ms_is_a_duplicate(
        self, client: FlaskClient, clock: Clock
    ):
        first = now_ms()
        clock(first)
        post(client, signed(first))
        clock(first + 20 * MINUTE_MS)

        response = post(client, signed(first + 20 * MINUTE_MS))  # same noticeId, re-signed

        assert response.get_json() == {"result": "duplicate"}
        assert len(store_of(client).events(SID)) == 1

    def test_an_operator_replay_of_a_kept_callback_is_not_judged_by_its_age(
        self, production: Settings
    ):
        # Refused because ops had not configured Agora's new secret yet; days pass.
        raw = signed(now_ms() - 3 * 24 * HOUR_MS)
        new_secret = "the-secret-ops-forgot"
        assert post(create_app(production).test_client(), raw, new_secret).status_code == 401
        fixed = create_app(replace(production, callback_secrets=(SECRET, new_secret)))
        client = fixed.test_client()
        auth = {"Authorization": f"Bearer {TOKEN}"}
        (kept,) = client.get("/api/v1/rejected", headers=auth).get_json()["rejected"]

        replayed = client.post(f"/api/v1/rejected/{kept['id']}/replay", headers=auth)

        assert replayed.get_json() == {"id": kept["id"], "result": "stored"}
        # The same body at the endpoint is still refused: it is days old.
        assert post(client, raw, new_secret).get_json()["reason"] == "notify_ms_too_old"


class TestDedupeWindowIsKept:
    """The store remembers a noticeId for the whole dedupe window despite TTL drift."""

    def test_the_notices_ttl_adds_the_refresh_interval_to_the_window(self, redis: Redis):
        store = CallbackStore(redis, retention=timedelta(days=1), dedupe_window=timedelta(days=1))
        body = load_example("33_")
        store.record(load_callback(body), json.dumps(body).encode(), received_ms=now_ms())

        # TTLs are pushed back at most once an hour here: a notice added just before the
        # next push would otherwise be forgotten an hour early.
        assert redis.ttl(keys.notices(SID)) >= timedelta(days=1, hours=1).total_seconds() - 5

    def test_a_redundant_copy_pushes_the_notices_ttl_back(self, redis: Redis):
        store = CallbackStore(redis, retention=timedelta(days=1), dedupe_window=timedelta(days=1))
        body = load_example("31_")
        store.record(load_callback(body), json.dumps(body).encode(), received_ms=now_ms())
        redis.expire(keys.notices(SID), 60)  # as if the last push was long ago
        copy = body | {"noticeId": "f" * 32}

        outcome = store.record(load_callback(copy), json.dumps(copy).encode(), received_ms=now_ms())

        assert outcome.outcome == "redundant"
        assert redis.ttl(keys.notices(SID)) > timedelta(days=1).total_seconds()
