"""Fixtures shared by every test: a private redis-server, the app, signed callbacks."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from rq import SimpleWorker
from rq.serializers import JSONSerializer
from werkzeug.test import TestResponse

from webhook.app import create_app
from webhook.config import Settings
from webhook.jobs import callback_queue
from webhook.redis_server import RedisServer
from webhook.signature import HEADER_V2, sign
from webhook.store import CallbackStore
from workers.context import configure
from workers.relay import relay_handoffs

DATA = Path(__file__).parent / "data" / "callbacks"
SECRET = "test-secret-current"
OLD_SECRET = "test-secret-previous"


def example_files() -> list[Path]:
    return sorted(DATA.glob("*.json"))


def load_example(prefix: str) -> dict[str, Any]:
    """The example body whose file name starts with prefix (e.g. "31_")."""
    (path,) = [p for p in example_files() if p.name.startswith(prefix)]
    body: dict[str, Any] = json.loads(path.read_text())
    return body


def varied(body: dict[str, Any], **payload: Any) -> dict[str, Any]:
    """A deep copy of body with payload fields replaced (noticeId kept unless given)."""
    result = copy.deepcopy(body)
    notice_id = payload.pop("notice_id", None)
    if notice_id is not None:
        result["noticeId"] = notice_id
    result["payload"].update(payload)
    if "sid" in payload and "sid" in result:
        result["sid"] = payload["sid"]
    return result


# The modules that take longest, longest first. make test runs the suite in two processes
# (pytest -n 2), each taking the next test when it is free: started first, these overlap
# the rest of the suite instead of ending it. Most of their time is waiting, for RQ to
# take a killed job over, a failover or an alert's deadline, not CPU.
LONGEST_FIRST = (
    "tests/system/test_chaos.py",
    "tests/system/test_reconciliation.py",
    "tests/system/test_sentinel.py",
    "tests/system/test_bench.py",
    "tests/system/test_service.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        module = item.nodeid.partition("::")[0]
        return LONGEST_FIRST.index(module) if module in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each module keeps its own order


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server on a free port; no test ever touches a shared Redis."""
    server = RedisServer(data_dir=tmp_path_factory.mktemp("redis"), appendonly=False).start()
    yield server
    server.stop()


@pytest.fixture
def redis(redis_server: RedisServer) -> Iterator[Redis]:
    client = Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.flushall()
    client.close()


@pytest.fixture
def settings(redis_server: RedisServer) -> Settings:
    return Settings(
        redis_url=redis_server.url,
        callback_secrets=(SECRET, OLD_SECRET),
        environment="production",
        log_format="text",
        max_body_bytes=64 * 1024,
        rejected_max=50,
    )


@pytest.fixture
def app(settings: Settings, redis: Redis) -> Flask:
    return create_app(settings)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


class PostCallback(Protocol):
    def __call__(
        self,
        body: dict[str, Any] | bytes,
        *,
        secret: str | None = ...,
        headers: dict[str, str] | None = ...,
    ) -> TestResponse: ...


@pytest.fixture
def post_callback(client: FlaskClient) -> PostCallback:
    """POST a body to the callback URL, signed correctly unless told otherwise."""

    def post(
        body: dict[str, Any] | bytes,
        *,
        secret: str | None = SECRET,
        headers: dict[str, str] | None = None,
    ) -> TestResponse:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent = {"Content-Type": "application/json"}
        if secret is not None:
            sent[HEADER_V2] = sign(raw, secret)
        sent.update(headers or {})
        return client.post("/agora/callback", data=raw, headers=sent)

    return post


def run_worker_once(redis: Redis, settings: Settings) -> int:
    """What a worker process does, once: relay the hand-offs waiting for a job, then drain
    the callback queue with a SimpleWorker in burst mode; returns jobs done."""
    configure(settings)
    queue = callback_queue(redis, settings.queue_name)
    relay_handoffs(CallbackStore(redis, retention=settings.retention), queue)
    before: int = queue.finished_job_registry.count
    SimpleWorker([queue], connection=redis, serializer=JSONSerializer).work(burst=True)
    after: int = queue.finished_job_registry.count
    return after - before


@pytest.fixture
def run_jobs(redis: Redis, settings: Settings) -> Callable[[], int]:
    return lambda: run_worker_once(redis, settings)
