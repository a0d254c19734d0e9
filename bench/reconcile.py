"""`make bench-reconcile`: reconciliation throughput and latency of ONE worker process.

For each worker class (fork: a work horse per job; simple: in-process), against its own
redis-server and the real web app under gunicorn:
- throughput: N recordings' terminal events (uploaded, session_exit) are accepted while
  the worker is stopped; the worker is started and we time how fast it drains the
  follow-up jobs (jobs/s, sessions reconciled/s);
- latency: with the worker running, terminal events arrive at a fixed rate below that
  throughput; for each we take the time from the callback's 200 to the moment the
  session's state became "uploaded" in Redis (p50, p99).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from redis import Redis

from bench.ingest import HOST, ROOT, SECRET, start_gunicorn
from bench.load import open_loop
from bench.traffic import PreparedRequest, _template, prepare
from webhook.jobs import callback_queue
from webhook.redis_server import RedisServer
from webhook.store import CallbackStore, keys

TOKEN = "bench-reconcile-api-token"


def api_request(sid: str, n: int) -> bytes:
    body = json.dumps({
        "resourceId": f"rid-{n}", "sid": sid, "cname": f"room{n % 50}", "uid": "527841",
        "mode": "individual",
        "clientRequest": {"storageConfig": {"vendor": 11, "region": 0, "bucket": "b"}},
    }).encode()  # fmt: skip
    head = (
        f"POST /api/v1/recordings HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


def session_callbacks(sid: str, n: int) -> tuple[list[PreparedRequest], list[PreparedRequest]]:
    """(the recording's start events, its terminal events) as signed requests."""
    sendts = 1_749_549_600_000 + n * 1000
    made: list[PreparedRequest] = []
    for sequence, prefix in enumerate(["40_", "30_", "31_", "11_"]):
        body: dict[str, Any] = _template(prefix)
        body["noticeId"] = f"{n:012d}{sequence:04d}{os.getpid():016x}"[:32]
        body["sid"] = sid
        body["payload"].update(sid=sid, cname=f"room{n % 50}", sequence=sequence,
                               sendts=sendts + sequence * 1000)  # fmt: skip
        made.append(prepare(body, SECRET, HOST))
    return made[:2], made[2:]


def send_all(port: int, requests: Sequence[PreparedRequest], rate: float) -> dict[str, float]:
    """Returns noticeId -> time its 200 arrived (epoch seconds)."""
    result, _ = asyncio.run(
        open_loop(HOST, port, requests, rate=rate, duration_s=len(requests) / rate + 0.001,
                  connections=32)
    )  # fmt: skip
    if result.statuses.get(200, 0) + result.statuses.get(201, 0) != len(requests):
        raise RuntimeError(f"not every callback was accepted: {dict(result.statuses)}")
    return result.answered_at


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # the worker keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "workers"], cwd=ROOT, env=env,
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def wait_drained(redis: Redis, queue_name: str, timeout_s: float) -> None:
    """Until no hand-off waits for the worker's relay and no job waits or runs."""
    queue = callback_queue(redis, queue_name)
    store = CallbackStore(redis)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (
            store.handoffs_waiting() == 0
            and queue.count == 0
            and queue.started_job_registry.count == 0
        ):
            return
        time.sleep(0.01)
    raise TimeoutError("the worker did not drain its queue")


def measure(worker_class: str, sessions: int, rate: float, work: Path) -> dict[str, float]:
    redis_server = RedisServer(data_dir=work / f"redis-{worker_class}").start()
    env = dict(os.environ) | {
        "REDIS_URL": redis_server.url, "AGORA_CALLBACK_SECRETS": SECRET, "APP_ENV": "production",
        "API_TOKENS": TOKEN, "WORKER_CLASS": worker_class, "LOG_LEVEL": "WARNING",
        "SWEEP_INTERVAL_SECONDS": "3600",
    }  # fmt: skip
    os.environ["API_TOKENS"] = TOKEN  # start_gunicorn passes the environment on
    web = start_gunicorn("service", redis_server.url, work)
    redis = Redis.from_url(redis_server.url)
    worker: subprocess.Popen[bytes] | None = None
    try:
        sids = [f"bench{worker_class}{n:08d}" for n in range(2 * sessions)]
        starts, finals = [], []
        for n, sid in enumerate(sids):
            begin, end = session_callbacks(sid, n)
            starts += begin
            finals.append(end)
        # Every session's start is forwarded and its recorder events arrive, worker stopped.
        api = [PreparedRequest(f"api-{s}", s, 0, api_request(s, n)) for n, s in enumerate(sids)]
        send_all(web.port, api + starts, rate=1500)
        worker = start_worker(env, work / "worker.log")
        wait_drained(redis, "agora", 300)
        worker.terminate()
        worker.wait(30)

        # Throughput: the terminal events of the first half, queued while the worker is off.
        batch = [r for pair in finals[:sessions] for r in pair]
        send_all(web.port, batch, rate=1500)
        # Each waits for the worker's relay, which makes it a job (part of what is measured).
        jobs = CallbackStore(redis).handoffs_waiting() + callback_queue(redis, "agora").count
        worker = start_worker(env, work / "worker.log")
        began = time.perf_counter()
        wait_drained(redis, "agora", 600)
        drained_s = time.perf_counter() - began
        jobs_per_s = jobs / drained_s

        # Latency: the second half arrives at a rate below the measured throughput.
        rate = min(rate, 0.8 * jobs_per_s)
        paced = [r for pair in finals[sessions:] for r in pair]
        answered = send_all(web.port, paced, rate=rate)
        wait_drained(redis, "agora", 600)
        latencies = []
        for pair in finals[sessions:]:
            uploaded = pair[0]
            state_ms = redis.hget(keys.recording(uploaded.sid), "state_ms")
            state = redis.hget(keys.recording(uploaded.sid), "state")
            if state in (b"uploaded", b"exited_idle") and state_ms is not None:
                latencies.append(int(cast(bytes, state_ms)) / 1000 - answered[uploaded.notice_id])
        latencies.sort()
        return {
            "jobs": jobs,
            "jobs_per_s": jobs_per_s,
            "sessions_per_s": jobs_per_s / 2,
            "paced_rate": rate,
            "latency_p50_ms": 1000 * statistics.median(latencies),
            "latency_p99_ms": 1000 * latencies[min(len(latencies) - 1,
                                                   round(0.99 * (len(latencies) - 1)))],
        }  # fmt: skip
    finally:
        if worker is not None and worker.poll() is None:
            worker.terminate()
            worker.wait(30)
        web.process.terminate()
        web.process.wait(30)
        redis_server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=1500)
    parser.add_argument(
        "--rate",
        type=float,
        default=80.0,
        help="terminal events/s for the latency run (capped at 80%% of the measured throughput)",
    )
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="agora-bench-reconcile-"))
    results = {}
    for worker_class in ("simple", "fork"):
        results[worker_class] = measure(worker_class, args.sessions, args.rate, work)
        r = results[worker_class]
        print(
            f"{worker_class:6s} worker: {r['jobs_per_s']:6.0f} jobs/s "
            f"({r['sessions_per_s']:.0f} sessions' terminal events/s); at "
            f"{r['paced_rate']:.0f} events/s: 200 -> reconciled p50 {r['latency_p50_ms']:.0f} ms, "
            f"p99 {r['latency_p99_ms']:.0f} ms   (targets: >= 100 jobs/s, p99 <= 2000 ms)",
            flush=True,
        )
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "reconcile-latest.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
