"""Redis answering with errors instead of going away (out of memory, a replica, a failed
snapshot, a flushed script cache, a busy script, loading its data): Agora gets a quick 503
and retries, nothing is half-written, the resend is stored once, and the probes say so."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from redis import Redis
from werkzeug.test import TestResponse

from tests.conftest import SECRET, load_example
from tests.integration.conftest import AUTH
from tests.integration.test_recordings_api import START, STOP
from webhook.app import create_app
from webhook.config import Settings
from webhook.redis_server import RedisServer, free_port, redis_major_version, redis_server_binary
from webhook.signature import HEADER_V2, sign
from webhook.store import CallbackStore, keys

SID = "38f8e3cfdc474cd56fc1ceba380d7e1a"
ANSWER_BUDGET_S = 2.0


def debug_options() -> tuple[str, ...]:
    """DEBUG and CONFIG SET dir are refused by default from Redis 7 on; 6.2 allows both."""
    if redis_major_version(redis_server_binary()) >= 7:
        return ("--enable-debug-command", "yes", "--enable-protected-configs", "yes")
    return ()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(data_dir=tmp_path / "redis", extra_args=debug_options()).start()
    yield server
    server.stop()


@pytest.fixture
def admin(own_redis: RedisServer) -> Iterator[Redis]:
    client = Redis.from_url(own_redis.url)
    yield client
    client.close()


def post(
    client: FlaskClient, body: dict[str, Any] | bytes, *, signed: bool = True
) -> tuple[TestResponse, float]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if signed:
        headers[HEADER_V2] = sign(raw, SECRET)
    started = time.monotonic()
    response = client.post("/agora/callback", data=raw, headers=headers)
    return response, time.monotonic() - started


def digest(admin: Redis) -> bytes:
    """A hash of the whole dataset: unchanged means nothing was written."""
    value: bytes = admin.execute_command("DEBUG", "DIGEST")  # type: ignore[no-untyped-call]  # unannotated upstream
    return value


def store_of(client: FlaskClient) -> CallbackStore:
    store: CallbackStore = client.application.extensions["agora.store"]
    return store


@contextmanager
def out_of_memory(admin: Redis) -> Iterator[None]:
    admin.config_set("maxmemory", 1)  # noeviction, as the service requires
    try:
        yield
    finally:
        admin.config_set("maxmemory", 0)


@contextmanager
def read_only(admin: Redis) -> Iterator[None]:
    # A primary nobody runs.
    admin.execute_command("REPLICAOF", "127.0.0.1", free_port())  # type: ignore[no-untyped-call]  # unannotated upstream
    try:
        yield
    finally:
        admin.execute_command("REPLICAOF", "NO", "ONE")  # type: ignore[no-untyped-call]  # unannotated upstream


@contextmanager
def snapshot_failed(admin: Redis, tmp_path: Path) -> Iterator[None]:
    """MISCONF: the last background save failed and stop-writes-on-bgsave-error is on."""
    gone = tmp_path / "gone"
    gone.mkdir()
    old_dir = str(admin.config_get("dir")["dir"])
    admin.config_set("stop-writes-on-bgsave-error", "yes")
    admin.config_set("save", "3600 1")
    admin.config_set("dir", str(gone))
    shutil.rmtree(gone)  # root may write anywhere, but not into a directory that is gone
    admin.bgsave()
    deadline = time.monotonic() + 10
    while admin.info("persistence")["rdb_last_bgsave_status"] != "err":
        assert time.monotonic() < deadline, "the background save did not fail"
        time.sleep(0.05)
    try:
        yield
    finally:
        admin.config_set("dir", old_dir)
        admin.bgsave()
        while admin.info("persistence")["rdb_last_bgsave_status"] != "ok":
            time.sleep(0.05)
        admin.config_set("save", "")


REFUSALS = ["oom", "readonly", "misconf"]


@contextmanager
def refusing_writes(how: str, admin: Redis, tmp_path: Path) -> Iterator[None]:
    if how == "oom":
        with out_of_memory(admin):
            yield
    elif how == "readonly":
        with read_only(admin):
            yield
    else:
        with snapshot_failed(admin, tmp_path):
            yield


@pytest.mark.parametrize("how", REFUSALS)
@pytest.mark.parametrize("event", ["33_", "31_"], ids=["no follow-up", "a follow-up"])
def test_a_refused_write_is_a_503_with_nothing_half_written_and_the_resend_stored_once(
    ops_client: FlaskClient, admin: Redis, tmp_path: Path, how: str, event: str
) -> None:
    earlier = load_example("40_")
    assert post(ops_client, earlier)[0].status_code == 200
    body = load_example(event)
    before = digest(admin)

    with refusing_writes(how, admin, tmp_path):
        refused, elapsed = post(ops_client, body)
        duplicate, _ = post(ops_client, earlier)

    assert refused.status_code == 503
    assert refused.get_json()["reason"] == "store_unavailable"
    assert refused.headers["Retry-After"]
    assert elapsed < ANSWER_BUDGET_S
    # Even a duplicate's answer needs its counters written: Agora retries it too.
    assert duplicate.status_code == 503
    assert digest(admin) == before  # no log entry without its dedupe marker, no count
    again, _ = post(ops_client, body)
    assert again.get_json() == {"result": "stored"}
    assert post(ops_client, body)[0].get_json() == {"result": "duplicate"}
    notices = [e.notice_id for e in store_of(ops_client).events(SID)]
    assert notices == [earlier["noticeId"], body["noticeId"]]
    if event == "31_":
        assert admin.zcard(keys.pending_handoffs()) == 1


@pytest.mark.parametrize("how", REFUSALS)
def test_refused_requests_keep_their_own_status_when_they_cannot_be_kept(
    ops_client: FlaskClient, admin: Redis, tmp_path: Path, how: str
) -> None:
    before = digest(admin)
    with refusing_writes(how, admin, tmp_path):
        unsigned, _ = post(ops_client, load_example("33_"), signed=False)
        not_json, _ = post(ops_client, b"{not json")
        too_big, _ = post(ops_client, b"x" * (300 * 1024))
        not_a_json_type = ops_client.post("/agora/callback", data=b"x", content_type="text/plain")

    # The real reason, never a 500 (Agora retries any non-200, and the retry is kept).
    answers = [r.status_code for r in (unsigned, not_json, too_big, not_a_json_type)]
    assert answers == [401, 400, 413, 415]
    assert digest(admin) == before


@pytest.mark.parametrize("how", REFUSALS)
def test_reads_work_and_writes_are_503s_while_redis_refuses_writes(
    ops_client: FlaskClient, admin: Redis, tmp_path: Path, how: str
) -> None:
    assert post(ops_client, load_example("40_"))[0].status_code == 200
    assert ops_client.post("/api/v1/recordings", json=START, headers=AUTH).status_code < 300
    reads = [
        "/api/v1/recordings", f"/api/v1/recordings/{SID}", f"/api/v1/recordings/{SID}/events",
        "/api/v1/alerts", "/api/v1/rejected",
    ]  # fmt: skip
    pages = ["/dashboard/", "/dashboard/sessions", f"/dashboard/sessions/{SID}",
             "/dashboard/alerts"]  # fmt: skip

    with refusing_writes(how, admin, tmp_path):
        read = {path: ops_client.get(path, headers=AUTH).status_code for path in reads}
        shown = {path: ops_client.get(path).status_code for path in pages}
        scrape = ops_client.get("/metrics").text
        start = ops_client.post("/api/v1/recordings", json=START, headers=AUTH)
        stop = ops_client.post(f"/api/v1/recordings/{SID}/stop", json=STOP, headers=AUTH)

    assert read == dict.fromkeys(reads, 200)
    # The overview counts RQ's failed jobs without RQ's cleanup, which writes.
    assert shown == dict.fromkeys(pages, 200)
    assert "agora_redis_up 1.0" in scrape
    assert "agora_failed_jobs 0.0" in scrape
    assert (start.status_code, start.get_json()["reason"]) == (503, "store_unavailable")
    assert (stop.status_code, stop.get_json()["reason"]) == (503, "store_unavailable")


@pytest.mark.parametrize(
    ("how", "code"), [("oom", "OOM"), ("readonly", "READONLY"), ("misconf", "MISCONF")]
)
def test_readyz_is_a_503_naming_the_refusal_while_redis_refuses_writes(
    ops_client: FlaskClient, admin: Redis, tmp_path: Path, how: str, code: str
) -> None:
    assert ops_client.get("/readyz").status_code == 200

    with refusing_writes(how, admin, tmp_path):
        ready = ops_client.get("/readyz")

    assert ready.status_code == 503
    assert ready.get_json() == {"status": "unavailable", "redis": f"refusing writes ({code})"}
    assert ops_client.get("/readyz").status_code == 200
    assert admin.pttl(keys.readiness_probe()) > 0  # the probe's key never stays


def test_a_flushed_script_cache_is_reloaded_and_the_callback_stored_once(
    ops_client: FlaskClient, admin: Redis
) -> None:
    earlier, body = load_example("40_"), load_example("31_")
    assert post(ops_client, earlier)[0].status_code == 200

    admin.script_flush()
    first, _ = post(ops_client, body)
    admin.script_flush()
    resend, _ = post(ops_client, body)

    assert first.get_json() == {"result": "stored"}
    assert resend.get_json() == {"result": "duplicate"}
    store = store_of(ops_client)
    assert [e.notice_id for e in store.events(SID)] == [earlier["noticeId"], body["noticeId"]]
    assert admin.zcard(keys.pending_handoffs()) == 1
    assert (store.stats()["stored"], store.stats()["duplicate"]) == (2, 1)


@pytest.mark.parametrize("reply_after_ms", [200, 5000], ids=["BUSY replies", "no reply"])
def test_a_long_script_of_someone_else_gives_a_503_within_the_budget(
    ops_client: FlaskClient, admin: Redis, own_redis: RedisServer, reply_after_ms: int
) -> None:
    # lua-time-limit: Redis 7 calls it busy-reply-threshold and keeps the old name.
    admin.config_set("lua-time-limit", reply_after_ms)
    assert post(ops_client, load_example("40_"))[0].status_code == 200
    blocker = Redis.from_url(own_redis.url, socket_timeout=30)
    spin = (
        "local stop = redis.call('TIME')[1] + ARGV[1]\n"
        "while redis.call('TIME')[1] + 0 < stop do end\n"
        "return 1"
    )
    thread = threading.Thread(target=blocker.eval, args=(spin, 0, 3))
    thread.start()
    time.sleep(0.5 if reply_after_ms < 1000 else 0.1)
    try:
        busy, elapsed = post(ops_client, load_example("33_"))
    finally:
        thread.join()
        blocker.close()

    assert busy.status_code == 503
    assert elapsed < ANSWER_BUDGET_S
    # Without a BUSY reply the write was sent and ran after the long script: the 503 said
    # "not confirmed", and the resend finds it stored, once.
    resend, _ = post(ops_client, load_example("33_"))
    assert resend.status_code == 200
    notices = [e.notice_id for e in store_of(ops_client).events(SID)]
    assert notices == [load_example("40_")["noticeId"], load_example("33_")["noticeId"]]


def test_a_redis_still_loading_its_data_gives_a_quick_503_and_the_resend_is_stored(
    tmp_path: Path,
) -> None:
    data = tmp_path / "loading"
    # Uncompressed: Redis answers while loading once per 2 MB of the file it has read.
    filler_server = RedisServer(
        data_dir=data, appendonly=False, extra_args=(*debug_options(), "--rdbcompression", "no")
    )
    filler = Redis.from_url(filler_server.start().url)
    filler.execute_command("DEBUG", "POPULATE", 20_000, "filler", 4096)  # type: ignore[no-untyped-call]  # unannotated upstream
    filler.save()
    filler.close()
    filler_server.stop()
    # 20,000 keys at 200 us each: four seconds of LOADING, answered every 0.1 s.
    server = RedisServer(
        data_dir=data, port=filler_server.port, appendonly=False,
        extra_args=("--key-load-delay", "200"),
    )  # fmt: skip
    client = create_app(
        Settings(redis_url=server.url, callback_secrets=(SECRET,), log_format="text")
    ).test_client()
    server.start()  # returns while it loads: INFO answers
    probe = Redis.from_url(server.url)
    try:
        assert probe.info("persistence")["loading"] == 1
        loading, elapsed = post(client, load_example("33_"))
        ready = client.get("/readyz")
        assert probe.info("persistence")["loading"] == 1, "it finished loading too soon"

        assert loading.status_code == 503
        assert loading.headers["Retry-After"]
        assert elapsed < ANSWER_BUDGET_S
        assert ready.get_json() == {"status": "unavailable", "redis": "loading"}
        deadline = time.monotonic() + 60
        while probe.info("persistence")["loading"] == 1:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert post(client, load_example("33_"))[0].get_json() == {"result": "stored"}
    finally:
        probe.close()
        server.stop()
