"""Repeated refusals of unverified requests from one client are answered 429 and sampled;
a validly signed callback from that client is still stored, and costs nothing extra."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from werkzeug.test import TestResponse

from tests.conftest import SECRET, load_example, varied
from tests.integration.test_metrics import scrape, value
from webhook.app import create_app
from webhook.config import Settings
from webhook.signature import HEADER_V2, sign
from webhook.store import CallbackStore, keys, now_ms

SID = "38f8e3cfdc474cd56fc1ceba380d7e1a"
LIMIT = 3
ATTACKER = "203.0.113.7"
AGORA = "198.51.100.20"


@pytest.fixture
def limited_app(settings: Settings, redis: Redis) -> Flask:
    return create_app(
        replace(settings, bad_signature_limit=LIMIT, bad_signature_window=timedelta(minutes=1))
    )


@pytest.fixture
def client(limited_app: Flask) -> FlaskClient:
    return limited_app.test_client()


def fresh(prefix: str = "33_", **payload: Any) -> bytes:
    body = varied(load_example(prefix), **payload) | {"notifyMs": now_ms()}
    return json.dumps(body).encode()


def post(
    client: FlaskClient,
    raw: bytes,
    *,
    secret: str | None = SECRET,
    addr: str = ATTACKER,
    headers: dict[str, str] | None = None,
) -> TestResponse:
    sent = {"Content-Type": "application/json"}
    if secret is not None:
        sent[HEADER_V2] = sign(raw, secret)
    sent.update(headers or {})
    return client.post(
        "/agora/callback", data=raw, headers=sent, environ_base={"REMOTE_ADDR": addr}
    )


def forged(client: FlaskClient, addr: str = ATTACKER, **kwargs: Any) -> TestResponse:
    return post(client, fresh(), secret="guessed-secret", addr=addr, **kwargs)


def store_of(client: FlaskClient) -> CallbackStore:
    store: CallbackStore = client.application.extensions["agora.store"]
    return store


def test_beyond_the_limit_a_bad_signature_gets_429_with_retry_after(client: FlaskClient):
    answers = [forged(client) for _ in range(LIMIT)]
    limited = forged(client)

    assert [a.status_code for a in answers] == [401] * LIMIT
    assert limited.status_code == 429
    body = limited.get_json()
    assert (body["code"], body["status"], body["reason"]) == (
        429,
        "Too Many Requests",
        "rate_limited",
    )
    assert "signature_mismatch" in body["message"]
    assert 1 <= int(limited.headers["Retry-After"]) <= 60


def test_a_valid_callback_from_a_limited_address_is_stored(client: FlaskClient):
    for _ in range(LIMIT + 5):
        forged(client, addr=AGORA)  # e.g. a secret rotation gone wrong at Agora's end

    response = post(client, fresh(), addr=AGORA)

    assert response.get_json() == {"result": "stored"}
    assert len(store_of(client).events(SID)) == 1
    assert forged(client, addr=AGORA).status_code == 429


def test_other_addresses_are_not_limited(client: FlaskClient):
    for _ in range(LIMIT + 1):
        forged(client)

    assert forged(client, addr="192.0.2.1").status_code == 401


def test_once_limited_only_a_sample_is_kept_and_every_request_is_counted(client: FlaskClient):
    before = scrape(client)
    over = 20

    for _ in range(LIMIT + over):
        forged(client)

    kept = store_of(client).rejected(count=1000)
    reasons = [k.reason for k in reversed(kept)]
    # The 1st, 2nd, 4th, 8th and 16th request over the limit: the flood is visible, and
    # cannot push real evidence out of the capped store.
    assert reasons == ["signature_mismatch"] * LIMIT + ["rate_limited"] * 5
    assert all(k.status == 429 and k.remote_addr == ATTACKER for k in kept[:5])
    assert store_of(client).stats() == {
        "rejected:signature_mismatch": LIMIT,
        "rejected:rate_limited": over,
    }
    after = scrape(client)
    for reason, count in (("signature_mismatch", LIMIT), ("rate_limited", over)):
        grew = value(after, "agora_callbacks_rejected_total", reason=reason) - value(
            before, "agora_callbacks_rejected_total", reason=reason
        )
        assert grew == count


def test_a_kept_sample_can_still_be_replayed_by_an_operator(settings: Settings, redis: Redis):
    app = create_app(replace(settings, bad_signature_limit=1, api_tokens=("ops",)))
    client = app.test_client()
    raw = fresh()
    post(client, raw, secret="rotated-secret")
    post(client, raw, secret="rotated-secret")  # 429, the first sample
    fixed = create_app(
        replace(settings, callback_secrets=(SECRET, "rotated-secret"), api_tokens=("ops",))
    ).test_client()
    sample = store_of(client).rejected()[0]
    assert sample.reason == "rate_limited"

    replayed = fixed.post(
        f"/api/v1/rejected/{sample.entry_id}/replay", headers={"Authorization": "Bearer ops"}
    )

    assert replayed.get_json()["result"] == "stored"


def test_the_limit_ends_with_its_window(settings: Settings, redis: Redis):
    window = timedelta(seconds=0.3)
    client = create_app(
        replace(settings, bad_signature_limit=1, bad_signature_window=window)
    ).test_client()
    forged(client)
    assert forged(client).status_code == 429

    time.sleep(window.total_seconds() + 0.05)

    assert forged(client).status_code == 401


def test_refusals_before_verification_and_stale_replays_count_too(settings: Settings, redis: Redis):
    app = create_app(
        replace(settings, bad_signature_limit=LIMIT, max_notify_age=timedelta(hours=1))
    )
    client = app.test_client()
    stale = json.dumps(load_example("33_")).encode()  # a captured callback of 2025

    answers = [
        post(client, fresh(), headers={"Content-Type": "text/plain"}).status_code,
        post(client, stale).status_code,
        post(client, stale).status_code,
        post(client, stale).status_code,
    ]

    assert answers == [415, 400, 400, 429]


def test_refusals_of_verified_callbacks_are_never_limited(client: FlaskClient):
    answers = {post(client, b"[]").status_code for _ in range(LIMIT * 3)}

    assert answers == {400}
    assert store_of(client).stats() == {"rejected:invalid_payload": LIMIT * 3}


def test_behind_a_proxy_the_forwarded_client_is_counted(settings: Settings, redis: Redis):
    client = create_app(replace(settings, bad_signature_limit=LIMIT, proxy_hops=1)).test_client()
    balancer = "10.0.0.2"

    for _ in range(LIMIT):
        forged(client, addr=balancer, headers={"X-Forwarded-For": ATTACKER})

    assert forged(client, addr=balancer, headers={"X-Forwarded-For": ATTACKER}).status_code == 429
    assert forged(client, addr=balancer, headers={"X-Forwarded-For": AGORA}).status_code == 401
    assert redis.exists(keys.refusals_by_client(ATTACKER))


def test_one_ipv6_64_shares_a_counter(client: FlaskClient):
    for n in range(LIMIT):
        forged(client, addr=f"2001:db8:1:2::{n + 1}")

    assert forged(client, addr="2001:db8:1:2:ffff::9").status_code == 429
    assert forged(client, addr="2001:db8:1:3::1").status_code == 401


def test_a_limit_of_zero_switches_the_limiter_off(settings: Settings, redis: Redis):
    client = create_app(replace(settings, bad_signature_limit=0)).test_client()

    answers = {forged(client).status_code for _ in range(40)}

    assert answers == {401}
    assert not redis.exists(keys.refusals_by_client(ATTACKER))


def test_a_good_callback_costs_one_redis_command_and_a_limited_client_does_not_change_it(
    client: FlaskClient, redis: Redis
):
    for _ in range(LIMIT + 1):
        forged(client)
    post(client, fresh(notice_id="warm-up" + "0" * 25))  # connection and script loaded
    marker = Redis(port=redis.connection_pool.connection_kwargs["port"])
    marker.ping()  # connected now, so its handshake is not measured

    with redis.monitor() as monitor:  # type: ignore[no-untyped-call]  # unannotated upstream
        response = post(client, fresh(notice_id="b" * 32, sequence=99))
        marker.echo("measured")
        sent = []
        for command in monitor.listen():
            if command["command"] == "ECHO measured":
                break
            if command["client_type"] != "lua":  # not the script's own calls
                sent.append(command["command"].split()[0].upper())

    marker.close()
    assert response.get_json() == {"result": "stored"}
    assert sent == ["EVALSHA"]
