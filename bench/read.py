"""`make bench` (reads): do the read API and the dashboard stay fast as the store grows?

Fills a private redis-server with 1,000 recording sessions, measures the p50/p99 latency of
the list, filter and detail endpoints and of the dashboard pages through gunicorn (same
settings as production), then fills it up to 100,000 sessions and measures again. Lists
come from indexes, so the two columns should be about the same. Targets on this 2-core
machine: API p99 <= 50 ms, page p99 <= 200 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import requests
from redis import Redis

from bench.ingest import start_gunicorn
from bench.traffic import _template
from webhook.recordings import State
from webhook.redis_server import RedisServer
from webhook.schemas import STATES, load_callback
from webhook.store import CallbackStore
from webhook.store.alerts import AlertStore
from webhook.store.recordings import RecordingStore

TOKEN = "bench-read-token"
SAMPLES = 300
API_P99_MS, PAGE_P99_MS = 50.0, 200.0
# Every session records three events; a session in 100 has an open alert.
EVENTS = ("40_", "33_", "31_")
CHANNELS = 500


def fill(redis: Redis, start: int, stop: int, now_ms: int) -> None:
    """Sessions start..stop-1, each with a recorder start, a progress tick and an upload,
    a lifecycle state, a channel shared with ~1/CHANNELS of the others, some alerts."""
    store, recordings, alerts = CallbackStore(redis), RecordingStore(redis), AlertStore(redis)
    templates = {prefix: _template(prefix) for prefix in EVENTS}
    rng = random.Random(start)
    for n in range(start, stop):
        sid = f"bench{n:027d}"
        cname = f"channel-{n % CHANNELS}"
        at = now_ms - (stop - n) * 10
        for sequence, prefix in enumerate(EVENTS):
            body = json.loads(json.dumps(templates[prefix]))
            body["noticeId"] = f"{sid}-{sequence}"
            body["sid"] = sid
            body["payload"].update(sid=sid, cname=cname, sequence=sequence, sendts=at)
            if prefix == "33_":
                body["payload"]["details"]["progress"] = rng.randrange(10_001)
            raw = json.dumps(body).encode()
            store.record(load_callback(body), raw, received_ms=at + sequence)
        recordings.set_state(sid, cast(State, rng.choice(STATES)), at)
        if n % 100 == 0:
            alerts.raise_alert(
                sid=sid, cname=cname, kind="backup_not_uploaded", message="bench",
                evidence={}, now_ms=at,
            )  # fmt: skip


def measure(call: Callable[[], requests.Response], samples: int) -> tuple[float, float]:
    """p50 and p99 in ms of sequential requests (after a warm-up)."""
    for _ in range(10):
        call().raise_for_status()
    times = []
    for _ in range(samples):
        began = time.perf_counter()
        answer = call()
        times.append((time.perf_counter() - began) * 1000)
        answer.raise_for_status()
    cuts = statistics.quantiles(times, n=100)
    return cuts[49], cuts[98]


def endpoints(
    base: str, api: requests.Session, page: requests.Session, sessions: int
) -> dict[str, Callable[[], requests.Response]]:
    rng = random.Random(7)

    def any_sid() -> str:
        return f"bench{rng.randrange(sessions):027d}"

    return {
        "API list": lambda: api.get(f"{base}/api/v1/recordings"),
        "API filter state": lambda: api.get(f"{base}/api/v1/recordings?state=backuped"),
        "API filter cname": lambda: api.get(f"{base}/api/v1/recordings?cname=channel-7"),
        "API detail": lambda: api.get(f"{base}/api/v1/recordings/{any_sid()}"),
        "API events": lambda: api.get(f"{base}/api/v1/recordings/{any_sid()}/events"),
        "API alerts": lambda: api.get(f"{base}/api/v1/alerts"),
        "page sessions": lambda: page.get(f"{base}/dashboard/sessions"),
        "page filter": lambda: page.get(f"{base}/dashboard/sessions?state=verified"),
        "page session": lambda: page.get(f"{base}/dashboard/sessions/{any_sid()}"),
        "page overview": lambda: page.get(f"{base}/dashboard/"),
        "page alerts": lambda: page.get(f"{base}/dashboard/alerts"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=SAMPLES)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="agora-bench-read-"))
    redis_server = RedisServer(data_dir=work / "redis", appendonly=False).start()
    redis = Redis.from_url(redis_server.url)
    os.environ["API_TOKENS"] = TOKEN
    target = start_gunicorn("service", redis_server.url, work)
    base = f"http://127.0.0.1:{target.port}"
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {TOKEN}"
    page = requests.Session()
    page.post(f"{base}/dashboard/login", data={"token": TOKEN}).raise_for_status()
    results: dict[str, dict[int, tuple[float, float]]] = {}
    try:
        filled = 0
        now_ms = int(time.time() * 1000)
        for size in (args.small, args.large):
            began = time.monotonic()
            fill(redis, filled, size, now_ms)
            filled = size
            print(f"filled {size:,} sessions ({time.monotonic() - began:.0f} s); "
                  f"Redis used {redis.info('memory')['used_memory_human']}",
                  flush=True)  # fmt: skip
            for name, call in endpoints(base, api, page, size).items():
                results.setdefault(name, {})[size] = measure(call, args.samples)
    finally:
        target.process.terminate()
        target.process.wait(timeout=30)
        redis_server.stop()
    return report(results, args.small, args.large)


def report(results: dict[str, dict[int, tuple[float, float]]], small: int, large: int) -> int:
    print(f"\n{'':18} {'p50 / p99 ms at ' + format(small, ','):>24} "
          f"{'at ' + format(large, ','):>18}   target p99")  # fmt: skip
    failed = 0
    for name, by_size in results.items():
        limit = API_P99_MS if name.startswith("API") else PAGE_P99_MS
        (p50_s, p99_s), (p50_l, p99_l) = by_size[small], by_size[large]
        verdict = "ok" if max(p99_s, p99_l) <= limit else "MISSED"
        failed += verdict != "ok"
        print(f"{name:18} {p50_s:11.1f} / {p99_s:6.1f} {p50_l:10.1f} / {p99_l:6.1f}"
              f"   <= {limit:.0f} {verdict}")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
