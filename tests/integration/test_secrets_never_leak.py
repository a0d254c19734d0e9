"""No secret we are given ever leaves the process: not in a log line, Redis, an answer or
/metrics, whatever traffic comes (good and bad signatures, bad tokens, errors, Redis down).

Each secret is distinctive, so a plain search finds it anywhere. Signatures are not
secrets (they are MACs of a body) and may appear; the secrets themselves may not, nor
the Basic credentials our Agora client would build from the customer id and secret.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import zlib
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any, cast

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pythonjsonlogger.orjson import OrjsonFormatter
from redis import Redis
from werkzeug.test import TestResponse

from tests.conftest import load_example, run_worker_once, varied
from webhook.app import create_app
from webhook.config import Settings
from webhook.logconfig import logging_config
from webhook.redis_server import RedisServer
from webhook.signature import HEADER_V1, HEADER_V2, sign
from webhook.store import now_ms

CALLBACK_SECRET = "cbsecret-7Qx2-current-NEVER-LOGGED"
OLD_CALLBACK_SECRET = "cbsecret-9Wm4-previous-NEVER-LOGGED"
API_TOKEN = "apitoken-3Kd8-NEVER-LOGGED"
OTHER_API_TOKEN = "apitoken-5Rt1-second-NEVER-LOGGED"
CUSTOMER_ID = "customer-id-visible"
CUSTOMER_SECRET = "custsecret-8Hv6-NEVER-LOGGED"
REDIS_USER = "leakcheck"
REDIS_PASSWORD = "redispass-2Lp9-NEVER-LOGGED"
WRONG_REDIS_PASSWORD = "redispass-6Zn3-wrong-NEVER-LOGGED"
STORAGE_SECRET_KEY = "storagesecret-4Bq7-NEVER-LOGGED"
RTC_TOKEN = "rtctoken-1Jc5-NEVER-LOGGED"

SECRETS = {
    CALLBACK_SECRET,
    OLD_CALLBACK_SECRET,
    API_TOKEN,
    OTHER_API_TOKEN,
    CUSTOMER_SECRET,
    REDIS_PASSWORD,
    WRONG_REDIS_PASSWORD,
    STORAGE_SECRET_KEY,
    RTC_TOKEN,
    # What an HTTP client would put on the wire for Agora's REST API.
    base64.b64encode(f"{CUSTOMER_ID}:{CUSTOMER_SECRET}".encode()).decode(),
}


@pytest.fixture
def redis_user(redis_server: RedisServer, redis: Redis) -> Iterator[str]:
    """A Redis user with a password: the service's REDIS_URL carries a credential."""
    redis.acl_setuser(
        REDIS_USER,
        enabled=True,
        passwords=[f"+{REDIS_PASSWORD}"],
        categories=["+@all"],
        keys=["*"],
        channels=["*"],
    )
    yield f"redis://{REDIS_USER}:{REDIS_PASSWORD}@127.0.0.1:{redis_server.port}/0"
    redis.acl_deluser(REDIS_USER)


@pytest.fixture
def secret_settings(settings: Settings, redis_user: str) -> Settings:
    return replace(
        settings,
        redis_url=redis_user,
        callback_secrets=(CALLBACK_SECRET, OLD_CALLBACK_SECRET),
        api_tokens=(API_TOKEN, OTHER_API_TOKEN),
        agora_app_id="app-id-visible",
        agora_customer_id=CUSTOMER_ID,
        agora_customer_secret=CUSTOMER_SECRET,
        # Nothing listens there: a query attempt fails fast.
        agora_api_base="http://127.0.0.1:9",
        max_notify_age=timedelta(hours=1),
        bad_signature_limit=5,
    )


class Traffic:
    """Everything the app answered, headers included."""

    def __init__(self) -> None:
        self.answers: list[bytes] = []

    def keep(self, response: TestResponse) -> TestResponse:
        self.answers.append(response.get_data())
        self.answers.append(str(response.headers).encode())
        return response


def callback(
    traffic: Traffic, client: FlaskClient, body: dict[str, Any] | bytes, **kwargs: Any
) -> TestResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    secret = kwargs.pop("secret", CALLBACK_SECRET)
    headers = {"Content-Type": "application/json"} | kwargs.pop("headers", {})
    if secret is not None:
        headers[HEADER_V2] = sign(raw, secret)
        headers[HEADER_V1] = sign(raw, secret, "sha1")
    return traffic.keep(client.post("/agora/callback", data=raw, headers=headers, **kwargs))


def fresh(prefix: str, **payload: Any) -> dict[str, Any]:
    return varied(load_example(prefix), **payload) | {"notifyMs": now_ms()}


def send_callbacks(traffic: Traffic, client: FlaskClient) -> None:
    assert callback(traffic, client, fresh("40_")).status_code == 200
    assert callback(traffic, client, fresh("31_")).status_code == 200  # a follow-up job
    assert callback(traffic, client, fresh("33_"), secret=OLD_CALLBACK_SECRET).status_code == 200
    assert callback(traffic, client, fresh("33_")).get_json()["result"] == "duplicate"
    bad = [
        callback(traffic, client, fresh("41_"), secret=None),
        callback(traffic, client, fresh("41_"), secret="a-guess"),
        callback(traffic, client, b"{not json"),
        callback(traffic, client, b"[]"),
        callback(traffic, client, fresh("41_") | {"notifyMs": 1}),
        callback(traffic, client, fresh("41_"), headers={"Content-Type": "text/plain"}),
        callback(traffic, client, b"{" + b" " * 70_000 + b"}"),
    ]
    assert [r.status_code for r in bad] == [401, 401, 400, 400, 400, 415, 413]
    # A guessing client runs into the limiter.
    for _ in range(4):
        callback(traffic, client, fresh("41_"), secret="another-guess")
    assert b'"rate_limited"' in traffic.answers[-2]


def call_every_route(traffic: Traffic, app: Flask, *, store_works: bool = True) -> None:
    """Each route without a token, with a wrong one and with a right one; then the calls
    that carry credentials of their own (a forwarded start), and replays."""
    client = app.test_client()
    for presented in (None, "Bearer not-a-token", f"Bearer {API_TOKEN}", f"Basic {API_TOKEN}"):
        headers = {"Authorization": presented} if presented else {}
        for rule in app.url_map.iter_rules():
            if rule.endpoint == "static":
                continue
            path = str(rule)
            for argument in rule.arguments:
                path = path.replace(f"<{argument}>", "38f8e3cfdc474cd56fc1ceba380d7e1a")
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                traffic.keep(client.open(path, method=method, headers=headers, json={}))
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    start = {
        "resourceId": "resource-1",
        "sid": "forwarded-sid",
        "cname": "class1024",
        "uid": "527841",
        "mode": "individual",
        "clientRequest": {
            "token": RTC_TOKEN,
            "storageConfig": {
                "vendor": 1,
                "region": 0,
                "bucket": "recordings",
                "accessKey": "AKIAVISIBLE",
                "secretKey": STORAGE_SECRET_KEY,
            },
        },
    }
    forwarded = traffic.keep(client.post("/api/v1/recordings", json=start, headers=auth))
    traffic.keep(client.get("/metrics"))
    if not store_works:
        return
    assert forwarded.status_code == 201
    rejected = client.get("/api/v1/rejected", headers=auth)
    traffic.keep(rejected)
    for kept in rejected.get_json()["rejected"]:
        traffic.keep(client.post(f"/api/v1/rejected/{kept['id']}/replay", headers=auth))


def redis_contents(redis: Redis) -> bytes:
    """Every key and value in Redis, compressed values (RQ's job data) unpacked too."""
    parts: list[bytes] = []
    for key in redis.scan_iter(count=1000):
        parts.append(key)
        kind = redis.type(key)
        values: list[Any]
        if kind == b"string":
            values = [redis.get(key)]
        elif kind == b"hash":
            values = [
                v for pair in cast(dict[bytes, bytes], redis.hgetall(key)).items() for v in pair
            ]
        elif kind == b"list":
            values = cast(list[bytes], redis.lrange(key, 0, -1))
        elif kind == b"set":
            values = list(cast(set[bytes], redis.smembers(key)))
        elif kind == b"zset":
            values = [str(m).encode() for m in redis.zrange(key, 0, -1, withscores=True)]
        elif kind == b"stream":
            entries = cast(list[tuple[bytes, dict[bytes, bytes]]], redis.xrange(key))
            values = [v for _, entry in entries for pair in entry.items() for v in pair]
        else:
            raise AssertionError(f"a {kind!r} at {key!r}: teach this test to read it")
        for value in values:
            if value is None:
                continue
            parts.append(value)
            with contextlib.suppress(zlib.error, TypeError):
                parts.append(zlib.decompress(value))
    return b"\n".join(parts)


def log_text(records: list[logging.LogRecord]) -> str:
    """Every record as written: the message, and the JSON and text lines of logconfig."""
    formatters: list[logging.Formatter] = []
    for log_format in ("json", "text"):
        config = dict(logging_config(log_format)["formatters"]["default"])
        if config.pop("()", None):
            formatters.append(OrjsonFormatter(**config))
        else:
            formatters.append(logging.Formatter(config["format"]))
    lines = []
    for record in records:
        lines.append(record.getMessage())
        lines.extend(formatter.format(record) for formatter in formatters)
        lines.append(repr(record.__dict__))
    return "\n".join(lines)


def test_no_secret_leaves_the_process(
    secret_settings: Settings, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    traffic = Traffic()
    app = create_app(secret_settings)
    client = app.test_client()

    send_callbacks(traffic, client)
    # The worker's logs are checked too: it must have had follow-ups to run.
    assert run_worker_once(Redis.from_url(secret_settings.redis_url), secret_settings) > 0
    call_every_route(traffic, app)
    # Redis refusing our credential: every answer is a 503 or a refusal, and logged.
    wrong = secret_settings.redis_url.replace(REDIS_PASSWORD, WRONG_REDIS_PASSWORD)
    broken = create_app(replace(secret_settings, redis_url=wrong))
    assert callback(traffic, broken.test_client(), fresh("32_")).status_code == 503
    assert callback(traffic, broken.test_client(), fresh("32_"), secret="x").status_code == 401
    call_every_route(traffic, broken, store_works=False)
    traffic.keep(broken.test_client().get("/readyz"))
    # And the settings themselves, as they could reach a log line.
    traffic.answers += [repr(secret_settings).encode(), str(secret_settings).encode()]

    logs = log_text(caplog.records)
    stored = redis_contents(redis)
    answers = b"\n".join(traffic.answers)
    # The search had material to search.
    assert "callback refused" in logs
    assert b"agora:rejected" in stored
    assert b"agora_callbacks_rejected_total" in answers
    for secret in SECRETS:
        assert secret not in logs, f"a log line holds {secret!r}"
        assert secret.encode() not in stored, f"Redis holds {secret!r}"
        assert secret.encode() not in answers, f"an answer holds {secret!r}"
