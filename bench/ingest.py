"""`make bench`: the service against the durable floor and a bare app, same gunicorn settings.

(a) service: this project's wsgi:app, production settings, signed callbacks;
(b) floor:   read the body, one Redis SET, answer 200 (the least a durable receiver does);
(c) bare:    read the body, answer 200 (context only).
They are driven alternately, in rounds, from one load generator on loopback. Each run also
counts the CPU time its gunicorn processes and its redis-server used per request: on this
CPU-bound machine that cost is what sets the rate, and it varies far less between runs
than the rate does (the same figure for the load generator is shown for context). Then the
service at half its peak rate (open loop, in rounds, the floor alongside at the same
rate), the ledger (every 200 "stored" is in Redis exactly once), and Redis memory per
stored event against the raw JSON size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from redis import Redis

from bench.load import LoadResult, closed_loop, open_loop
from bench.processes import cpu_seconds, listening_sockets, process_tree
from bench.traffic import PreparedRequest, prepared_traffic
from webhook.redis_server import RedisServer, free_port
from webhook.store import keys

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-not-a-real-one"
HOST = "127.0.0.1"

APPS = {
    "service": "wsgi:app",
    "floor": "bench.floor:floor_app",
    "bare": "bench.floor:bare_app",
}
# --breakdown: the service with one part swapped out (bench/variants.py), name -> variant.
VARIANTS = {
    "noop-script": "noop_script",
    "spin-script": "spin_script",
    "commands-only": "commands_only",
    "dedupe-log": "dedupe_log",
    "set-store": "set",
    "minimal": "minimal",
}
# Targets that answer a noticeId they have seen "duplicate" without storing it again: they
# must get fresh callbacks in every run, or they would measure the cheap duplicate path.
DEDUPING = {"service", "dedupe-log"}


@dataclass
class Target:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    redis_pid: int | None = None  # the redis-server this target writes to
    cursor: int = 0
    runs: list[LoadResult] = field(default_factory=list)
    # CPU microseconds per request in each run: gunicorn (master and workers), redis-server.
    server_cpu_us: list[float] = field(default_factory=list)
    redis_cpu_us: list[float] = field(default_factory=list)
    # The load generator's own CPU per request (context: it shares the machine).
    load_cpu_us: list[float] = field(default_factory=list)

    def rewind(self) -> None:
        """Start the next run at the first callback again, unless this target dedupes."""
        if self.name not in DEDUPING:
            self.cursor = 0


def start_gunicorn(
    name: str, redis_url: str, log_dir: Path, writes_to: RedisServer | None = None
) -> Target:
    port = free_port()
    env = dict(os.environ)
    env.update(
        PORT=str(port),
        GUNICORN_BIND=f"{HOST}:{port}",
        REDIS_URL=redis_url,
        APP_ENV="production",
        AGORA_CALLBACK_SECRETS=SECRET,
        LOG_FORMAT="json",
        WEB_CONCURRENCY=os.environ.get("WEB_CONCURRENCY", "2"),
    )
    if name in VARIANTS:
        env["BENCH_VARIANT"] = VARIANTS[name]
    app = APPS.get(name, "bench.variants:app")
    with (log_dir / f"{name}.log").open("wb") as log:  # gunicorn keeps its own copy
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", app],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    workers = int(env["WEB_CONCURRENCY"])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        # Every worker listens on its own SO_REUSEPORT socket (deploy/gunicorn.conf.py):
        # measuring before all are up would send every connection to the first one.
        if listening_sockets(port) >= workers:
            redis_pid = writes_to.process.pid if writes_to and writes_to.process else None
            return Target(name, port, process, redis_pid)
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"gunicorn for {name} did not start; see {log_dir / name}.log")


def run_closed(
    target: Target, traffic: Sequence[PreparedRequest], seconds: float, conns: int
) -> LoadResult:
    server = process_tree(target.process.pid)
    redis = [target.redis_pid] if target.redis_pid else []
    before = cpu_seconds(server), cpu_seconds(redis), time.process_time()
    result, used = asyncio.run(
        closed_loop(HOST, target.port, traffic[target.cursor :], connections=conns,
                    duration_s=seconds)
    )  # fmt: skip
    after = cpu_seconds(server), cpu_seconds(redis), time.process_time()
    target.cursor += used
    per_request = 1e6 / max(1, result.completed)
    target.server_cpu_us.append((after[0] - before[0]) * per_request)
    target.redis_cpu_us.append((after[1] - before[1]) * per_request)
    target.load_cpu_us.append((after[2] - before[2]) * per_request)
    return result


def ledger(redis: Redis, answers: dict[str, bytes], sids: dict[str, str]) -> dict[str, int]:
    """Every noticeId answered "stored" must be in its session's log exactly once."""
    stored = [nid for nid, body in answers.items() if json.loads(body)["result"] == "stored"]
    logged: dict[str, int] = {}
    for sid in {sids[nid] for nid in answers}:
        for _, fields in cast(
            list[tuple[bytes, dict[bytes, bytes]]], redis.xrange(keys.events(sid))
        ):
            nid = fields[b"nid"].decode()
            logged[nid] = logged.get(nid, 0) + 1
    missing = sum(1 for nid in stored if logged.get(nid, 0) == 0)
    twice = sum(1 for n in logged.values() if n > 1)
    unanswered = sum(1 for nid in logged if nid not in answers)
    return {
        "answered_stored": len(stored),
        "in_redis": len(logged),
        "missing": missing,
        "stored_twice": twice,
        "in_redis_without_answer": unanswered,
    }


def store_memory(redis: Redis) -> int:
    """Bytes Redis uses for our keys (MEMORY USAGE summed; RQ's keys excluded)."""
    total = 0
    for key in redis.scan_iter(match=f"{keys.PREFIX}:*", count=1000):
        total += int(cast(int, redis.memory_usage(key, samples=0)) or 0)
    return total


def fmt(result: LoadResult, target: Target) -> str:
    return (
        f"{result.rate:8.0f} req/s   p50 {result.percentile_ms(50):6.2f} ms   "
        f"p99 {result.percentile_ms(99):6.2f} ms   CPU/req {target.server_cpu_us[-1]:4.0f} "
        f"+ {target.redis_cpu_us[-1]:3.0f} us   non-200 "
        f"{result.completed - result.statuses[200]}  errors {result.errors}"
    )


def _half_peak_figures(runs: list[LoadResult]) -> dict[str, Any]:
    each = [run.percentile_ms(99) for run in runs]
    return {
        "rate": statistics.median(run.rate for run in runs),
        "p50_ms": statistics.median(run.percentile_ms(50) for run in runs),
        "p99_ms": statistics.median(each),
        "p99_ms_each": each,
        "non_200": sum(run.not_ok for run in runs),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0, help="per measured run")
    parser.add_argument("--rounds", type=int, default=7, help="alternations; medians are reported")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--sessions", type=int, default=4000, help="recordings of traffic")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results", help="where the JSON goes"
    )
    parser.add_argument(
        "--breakdown", action="store_true",
        help="also measure the service with its record script made a no-op (and a no-op "
        "after a pure-CPU spin in Redis), made only the real script's Redis calls, made only "
        "a noticeId dedupe + log append, with one SET instead of its store, and a minimal "
        "signature + marshmallow + SET app (bench/variants.py)",
    )  # fmt: skip
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="agora-bench-"))
    redis_service = RedisServer(data_dir=work / "redis-service").start()
    redis_floor = RedisServer(data_dir=work / "redis-floor").start()
    targets: list[Target] = []
    try:
        print(f"preparing signed traffic for {args.sessions} recordings ...", flush=True)
        traffic = prepared_traffic(args.sessions, SECRET, HOST)
        sids = {r.notice_id: r.sid for r in traffic}
        raw_bytes = {r.notice_id: r.body_size for r in traffic}
        mean_body = statistics.mean(raw_bytes.values())
        print(f"{len(traffic)} unique callbacks, mean body {mean_body:.0f} B")
        targets = [
            start_gunicorn("service", redis_service.url, work, redis_service),
            start_gunicorn("floor", redis_floor.url, work, redis_floor),
            start_gunicorn("bare", redis_floor.url, work),
        ]
        if args.breakdown:
            targets += [start_gunicorn(n, redis_floor.url, work, redis_floor) for n in VARIANTS]
        by_name = {t.name: t for t in targets}
        service = by_name["service"]
        answers: dict[str, bytes] = {}
        for target in targets:  # warm-up: imports, connection pools, script cache
            warm = run_closed(target, traffic, 1.0, args.connections)
            for figures in (target.server_cpu_us, target.redis_cpu_us, target.load_cpu_us):
                figures.clear()
            if target is service:
                answers.update(warm.answers)
            target.rewind()
        for round_no in range(args.rounds):
            shift = round_no % len(targets)
            for target in targets[shift:] + targets[:shift]:
                target.rewind()
                result = run_closed(target, traffic, args.seconds, args.connections)
                target.runs.append(result)
                if target is service:
                    answers.update(result.answers)
                print(f"round {round_no + 1}  {target.name:11s} {fmt(result, target)}", flush=True)

        peak = {t.name: statistics.median(r.rate for r in t.runs) for t in targets}
        # Half the service's peak, open loop, in rounds like the peak: on a shared machine
        # one stall of a few hundred ms sets a run's p99. The floor gets the same offered
        # rate in the same rounds, to show how much of the tail is the machine's own.
        half_rate = peak["service"] / 2
        floor = by_name["floor"]
        half_runs: dict[str, list[LoadResult]] = {"service": [], "floor": []}
        for round_no in range(args.rounds):
            pair = (service, floor) if round_no % 2 == 0 else (floor, service)
            for target in pair:
                target.rewind()
                result, used = asyncio.run(
                    open_loop(HOST, target.port, traffic[target.cursor :], rate=half_rate,
                              duration_s=args.seconds, connections=64)
                )  # fmt: skip
                target.cursor += used
                half_runs[target.name].append(result)
                if target is service:
                    answers.update(result.answers)

        client = Redis.from_url(redis_service.url)
        book = ledger(client, answers, sids)
        stored_ids = [n for n, b in answers.items() if json.loads(b)["result"] == "stored"]
        raw_total = sum(raw_bytes[n] for n in stored_ids)
        memory = store_memory(client)
        used_memory = int(cast(dict[str, int], client.info("memory"))["used_memory"])

        def p99(name: str) -> float:
            return statistics.median(r.percentile_ms(99) for r in by_name[name].runs)

        def p50(name: str) -> float:
            return statistics.median(r.percentile_ms(50) for r in by_name[name].runs)

        def cpu(name: str) -> tuple[float, float]:
            target = by_name[name]
            return statistics.median(target.server_cpu_us), statistics.median(target.redis_cpu_us)

        print("\n== Ingestion benchmark (median of rounds; gunicorn settings as deploy/)")
        for name in by_name:
            server_us, redis_us = cpu(name)
            print(
                f"{name:11s} {peak[name]:8.0f} req/s   "
                f"p50 {p50(name):6.2f} ms   p99 {p99(name):6.2f} ms   "
                f"CPU per request: gunicorn {server_us:4.0f} us + redis-server {redis_us:3.0f} us"
            )
        load_us = statistics.median(us for t in targets for us in t.load_cpu_us)
        print(f"(the load generator used {load_us:.0f} us per request)")
        ratio_floor = peak["service"] / peak["floor"]
        ratio_bare = peak["service"] / peak["bare"]
        print(f"(a)/(b) service/floor = {ratio_floor:.2f}   (target >= 0.80)")
        cpu_ratio = sum(cpu("floor")) / sum(cpu("service"))
        print(f"        floor/service CPU per request = {cpu_ratio:.2f}")
        print(f"(a)/(c) service/bare  = {ratio_bare:.2f}")
        for name in VARIANTS if args.breakdown else ():
            print(f"{name}/floor = {peak[name] / peak['floor']:.2f}")
        half = {name: _half_peak_figures(runs) for name, runs in half_runs.items()}
        print(
            f"service at half peak ({half_rate:.0f} req/s offered): p50 "
            f"{half['service']['p50_ms']:.2f} ms  p99 {half['service']['p99_ms']:.2f} ms "
            f"(target p99 <= 20 ms; median of {args.rounds} runs, each run's p99: "
            f"{', '.join(f'{ms:.1f}' for ms in half['service']['p99_ms_each'])})  "
            f"non-200 {half['service']['non_200']}"
        )
        print(
            f"  floor at the same rate: p99 {half['floor']['p99_ms']:.2f} ms (each run: "
            f"{', '.join(f'{ms:.1f}' for ms in half['floor']['p99_ms_each'])})"
        )
        print(
            f"ledger: {book['answered_stored']} answered stored, {book['in_redis']} in Redis, "
            f"{book['missing']} missing, {book['stored_twice']} stored twice, "
            f"{book['in_redis_without_answer']} in Redis without an answer"
        )
        per_event = memory / max(1, book["in_redis"])
        raw_mean = raw_total / max(1, len(stored_ids))
        print(
            f"memory: {per_event:.0f} B per stored event in our keys vs {raw_mean:.0f} B raw JSON "
            f"= {per_event / raw_mean:.2f}x (target <= 2x); used_memory {used_memory / 1e6:.1f} MB "
            f"(includes RQ's pending follow-up jobs)"
        )
        exact = book["missing"] == 0 and book["stored_twice"] == 0
        print("ledger exact" if exact else "LEDGER NOT EXACT")
        results = {
            "peak_rps": peak,
            "p50_ms": {n: p50(n) for n in by_name},
            "p99_ms": {n: p99(n) for n in by_name},
            "non_200": {t.name: sum(r.not_ok for r in t.runs) for t in targets},
            "ratio_service_floor": ratio_floor,
            "ratio_service_bare": ratio_bare,
            "cpu_us_per_request": {n: dict(zip(("gunicorn", "redis"), cpu(n), strict=True))
                                   for n in by_name},
            "cpu_ratio_floor_service": cpu_ratio,
            "half_peak": {"offered_rps": half_rate, **half},
            "ledger": book,
            "memory_per_event_bytes": per_event,
            "raw_json_mean_bytes": raw_mean,
        }  # fmt: skip
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "ingest-latest.json").write_text(json.dumps(results, indent=2))
        return 0 if exact else 1
    finally:
        for target in targets:
            target.process.terminate()
        for target in targets:
            target.process.wait(timeout=30)
        redis_service.stop()
        redis_floor.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
