"""RQ's own tools work on our queues unchanged: `rq info` and rq-dashboard (with --json,
because our jobs use RQ's JSONSerializer), against a real redis-server."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from redis import Redis

from bench.processes import is_listening, stop, wait_for
from tests.conftest import PostCallback, load_example, varied
from webhook.config import Settings
from webhook.jobs import callback_queue
from webhook.redis_server import RedisServer, free_port
from webhook.store import CallbackStore
from workers.relay import relay_handoffs

pytestmark = pytest.mark.system

BIN = Path(sys.executable).parent


@pytest.fixture
def queued(
    post_callback: PostCallback, client: FlaskClient, redis: Redis, settings: Settings
) -> list[str]:
    """Three follow-up callbacks accepted and relayed, their jobs waiting for a worker."""
    notices = []
    for n, prefix in enumerate(("31_", "32_", "11_")):
        body = varied(load_example(prefix), notice_id=f"rq-tools-{n}")
        assert post_callback(body).json == {"result": "stored"}
        notices.append(body["noticeId"])
    relay_handoffs(CallbackStore(redis), callback_queue(redis, settings.queue_name))
    return notices


@pytest.fixture
def rq_dashboard(redis_server: RedisServer, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / "rq-dashboard.log").open("wb")
    process = subprocess.Popen(
        [str(BIN / "rq-dashboard"), "--redis-url", redis_server.url, "--json",
         "--bind", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: is_listening(f"{base}/0/data/queues.json"), 20, "rq-dashboard")
        yield base
    finally:
        stop(process)
        log.close()


def get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=10) as answer:
        found: dict[str, object] = json.loads(answer.read())
    return found


def test_rq_info_counts_our_queue(queued: list[str], redis_server: RedisServer, redis: Redis):
    done = subprocess.run(
        [str(BIN / "rq"), "info", "--url", redis_server.url, "--raw", "--only-queues",
         "--serializer", "json"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip

    assert f"queue agora {len(queued)}" in done.stdout


def test_rq_dashboard_lists_our_queue_and_reads_our_jobs(queued: list[str], rq_dashboard: str):
    queues = get_json(f"{rq_dashboard}/0/data/queues.json")["queues"]
    assert isinstance(queues, list)
    (agora,) = [q for q in queues if q["name"] == "agora"]
    assert agora["count"] == len(queued)

    jobs = get_json(f"{rq_dashboard}/0/data/jobs/agora/queued/10/asc/1.json")["jobs"]
    assert isinstance(jobs, list)
    assert len(jobs) == len(queued)
    detail = get_json(f"{rq_dashboard}/0/data/job/{jobs[0]['id']}.json")
    assert f"process callback {queued[0]}" in str(detail["description"])
    with urllib.request.urlopen(f"{rq_dashboard}/0/view/queues", timeout=10) as page:
        assert page.status == 200
