"""GET /api/v1/rejected and POST /api/v1/rejected/<id>/replay."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from flask.testing import FlaskClient
from redis import Redis

from tests.conftest import SECRET, load_example
from webhook.app import create_app
from webhook.config import Settings
from webhook.signature import HEADER_V2, sign
from webhook.store import CallbackStore

TOKEN = "ops-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NEW_SECRET = "the-secret-ops-forgot-to-configure"
SID = "38f8e3cfdc474cd56fc1ceba380d7e1a"


def app_with(settings: Settings, *secrets: str) -> FlaskClient:
    return create_app(
        replace(settings, api_tokens=(TOKEN,), callback_secrets=secrets)
    ).test_client()


def post_signed(client: FlaskClient, raw: bytes, secret: str) -> int:
    headers = {"Content-Type": "application/json", HEADER_V2: sign(raw, secret)}
    return client.post("/agora/callback", data=raw, headers=headers).status_code


def test_refused_callbacks_are_listed_newest_first(settings: Settings, redis: Redis):
    client = app_with(settings, SECRET)
    raw = json.dumps(load_example("31_")).encode()
    post_signed(client, raw, NEW_SECRET)
    client.post("/agora/callback", data=b"[]", content_type="application/json")

    listed = client.get("/api/v1/rejected", headers=AUTH).get_json()["rejected"]

    assert [r["reason"] for r in listed] == ["signature_missing", "signature_mismatch"]
    assert listed[1]["body"] == raw.decode()
    assert listed[1]["headers"][HEADER_V2] == sign(raw, NEW_SECRET)


def test_a_bad_limit_is_400_naming_the_query_parameter(settings: Settings, redis: Redis):
    response = app_with(settings, SECRET).get("/api/v1/rejected?limit=0", headers=AUTH)

    assert response.status_code == 400
    assert response.get_json()["reason"] == "invalid_query"
    assert set(response.get_json()["errors"]) == {"limit"}


def test_a_callback_refused_for_a_missing_secret_is_stored_once_replayed(
    settings: Settings, redis: Redis
):
    raw = json.dumps(load_example("31_")).encode()
    assert post_signed(app_with(settings, SECRET), raw, NEW_SECRET) == 401
    fixed = app_with(settings, SECRET, NEW_SECRET)  # the operator adds the secret
    (kept,) = fixed.get("/api/v1/rejected", headers=AUTH).get_json()["rejected"]

    first = fixed.post(f"/api/v1/rejected/{kept['id']}/replay", headers=AUTH)
    again = fixed.post(f"/api/v1/rejected/{kept['id']}/replay", headers=AUTH)

    assert first.get_json() == {"id": kept["id"], "result": "stored"}
    assert again.get_json() == {"id": kept["id"], "result": "duplicate"}
    assert len(CallbackStore(redis).events(SID)) == 1


def test_a_replay_still_unsigned_for_us_is_refused_again(settings: Settings, redis: Redis):
    client = app_with(settings, SECRET)
    post_signed(client, json.dumps(load_example("31_")).encode(), NEW_SECRET)
    (kept,) = client.get("/api/v1/rejected", headers=AUTH).get_json()["rejected"]

    response = client.post(f"/api/v1/rejected/{kept['id']}/replay", headers=AUTH)

    # Not a 401: the operator's token was good; the kept body's signature still is not.
    assert response.status_code == 422
    answer = response.get_json()
    assert answer["reason"] == "replay_refused"
    assert answer["errors"] == {"callback": {"status": 401, "reason": "signature_mismatch"}}


def test_a_truncated_body_cannot_be_replayed(settings: Settings, redis: Redis):
    client = app_with(settings, SECRET)
    body = load_example("40_")
    body["payload"]["details"]["padding"] = "x" * settings.max_body_bytes
    post_signed(client, json.dumps(body).encode(), SECRET)
    (kept,) = client.get("/api/v1/rejected", headers=AUTH).get_json()["rejected"]

    response = client.post(f"/api/v1/rejected/{kept['id']}/replay", headers=AUTH)

    assert response.status_code == 409
    assert response.get_json()["reason"] == "not_replayable"


@pytest.mark.parametrize("entry", ["1-0", "not-an-id"])
def test_replaying_an_unknown_entry_is_404(settings: Settings, redis: Redis, entry: str):
    response = app_with(settings, SECRET).post(f"/api/v1/rejected/{entry}/replay", headers=AUTH)

    assert response.status_code == 404
