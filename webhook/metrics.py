"""Prometheus metrics: counters the processes keep, and gauges read from Redis at scrape time.

Counters and histograms work under several gunicorn workers (and the RQ workers on the same
host) through prometheus_client's multiprocess mode: set PROMETHEUS_MULTIPROC_DIR to an
empty directory before any process starts (webhook/gunicorn_config.py does it for the web).
Pipeline state (queue depth, failed jobs, open alerts, the oldest unreconciled session) is
read from Redis when /metrics is scraped, so every replica reports the same truth.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.utils import as_text, utcparse
from rq.worker_registration import get_keys

from webhook.store import CallbackStore, keys, now_ms
from webhook.store.alerts import AlertStore
from webhook.store.worker_counters import FAMILIES, WorkerCounters

CALLBACKS = Counter(
    "agora_callbacks_total", "Callbacks received, by eventType and outcome",
    ["event_type", "outcome"],
)  # fmt: skip
REJECTED = Counter(
    "agora_callbacks_rejected_total", "Requests refused, by reason (signature failures too)",
    ["reason"],
)  # fmt: skip
ACK_SECONDS = Histogram(
    "agora_callback_ack_seconds", "From reading a callback to answering it",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
)  # fmt: skip
STORE_SECONDS = Histogram(
    "agora_store_seconds", "The one Redis round trip that records a callback",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 2),
)  # fmt: skip


# agora_open_alerts reads the alerts themselves, for their kind and severity: at most this
# many per state and scrape (agora_alerts is an exact count of every state).
OPEN_ALERTS_READ = 10_000


class PipelineCollector(Collector):
    """Gauges read from Redis at scrape time."""

    def __init__(
        self, redis: Redis, queue: Queue, alerts: AlertStore, callbacks: CallbackStore
    ) -> None:
        self.redis, self.queue, self.alerts, self.callbacks = redis, queue, alerts, callbacks

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        up = GaugeMetricFamily("agora_redis_up", "Redis answered the scrape")
        # Everything is read before anything is yielded: a Redis that fails half-way must
        # give one agora_redis_up 0, not a 1 and a 0 (Prometheus refuses a family twice,
        # and the scrape would fail just when the alert on it should fire) and half the
        # gauges with values nobody could tell from real ones.
        try:
            families = list(self._collect())
        except RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        depth = GaugeMetricFamily("agora_queue_depth", "Jobs waiting in the RQ queue")
        depth.add_metric([], self.queue.count)
        yield depth
        waiting = GaugeMetricFamily(
            "agora_handoffs_waiting",
            "Stored follow-up callbacks waiting for a worker's relay to enqueue their job",
        )
        waiting.add_metric([], self.callbacks.handoffs_waiting())
        yield waiting
        failed = GaugeMetricFamily("agora_failed_jobs", "Jobs in RQ's failed registry")
        # get_job_count(cleanup=False): RQ's .count cleans the registry first, a write, and a
        # Redis refusing writes (a replica, MISCONF) would make the whole scrape say it is down.
        failed.add_metric([], self.queue.failed_job_registry.get_job_count(cleanup=False))
        yield failed
        scheduled = self.queue.scheduled_job_registry
        lag = GaugeMetricFamily(
            "agora_scheduler_lag_seconds", "How late the most overdue scheduled job is"
        )
        # The scheduled registry is scored by run time: its lowest score in the past is how
        # far behind the scheduler is.
        oldest = _lowest_score(self.redis, scheduled.key)
        lag.add_metric([], max(0.0, now_ms() / 1000 - oldest) if oldest is not None else 0)
        yield lag
        by_state = GaugeMetricFamily(
            "agora_alerts", "Alerts by state, exactly (kept for the retention)", labels=["state"]
        )
        for state, count in self.alerts.count_by_state().items():
            by_state.add_metric([state], count)
        yield by_state
        # state tells an alert nobody took (open) from one someone acknowledged: a pager
        # rule wants the first only, or an acknowledged lost recording pages for 30 days.
        open_alerts = GaugeMetricFamily(
            "agora_open_alerts",
            f"Alerts not resolved, by kind, severity and state (the newest {OPEN_ALERTS_READ} "
            "per state; agora_alerts counts them all)",
            labels=["kind", "severity", "state"],
        )
        counts: dict[tuple[str, str, str], int] = {}
        for state in ("open", "acknowledged"):
            for alert in self.alerts.in_state(state, limit=OPEN_ALERTS_READ):
                key = (alert.kind, alert.severity, state)
                counts[key] = counts.get(key, 0) + 1
        for labels, count in sorted(counts.items()):
            open_alerts.add_metric(list(labels), count)
        yield open_alerts
        due_ms = _lowest_score(self.redis, keys.active_recordings())
        age = GaugeMetricFamily(
            "agora_oldest_unreconciled_seconds",
            "How long the most overdue active session has waited for reconciliation",
        )
        age.add_metric([], max(0.0, (now_ms() - due_ms) / 1000) if due_ms is not None else 0)
        yield age
        workers = GaugeMetricFamily(
            "agora_workers_alive", "RQ workers with a heartbeat in the last two minutes"
        )
        workers.add_metric([], recent_workers(self.redis))
        yield workers
        yield from self._worker_counters()

    def _worker_counters(self) -> Iterator[CounterMetricFamily]:
        """What every worker on every host did, from Redis: RQ's own per-worker job counts
        and our counters (webhook.store.worker_counters)."""
        jobs = CounterMetricFamily(
            "agora_worker_jobs", "Jobs each registered RQ worker finished, by outcome",
            labels=["worker", "outcome"],
        )  # fmt: skip
        busy = CounterMetricFamily(
            "agora_worker_busy_seconds", "Time each registered RQ worker spent in jobs",
            labels=["worker"],
        )  # fmt: skip
        for worker in registered_workers(self.redis):
            jobs.add_metric([worker.name, "succeeded"], worker.successful_jobs)
            jobs.add_metric([worker.name, "failed"], worker.failed_jobs)
            busy.add_metric([worker.name], worker.working_seconds)
        yield jobs
        yield busy
        counted = WorkerCounters(self.redis).read()
        for family, label in FAMILIES.items():
            metric = CounterMetricFamily(
                f"agora_worker_{family}", _WORKER_HELP[family], labels=[label]
            )
            for value, count in sorted(counted.get(family, {}).items()):
                metric.add_metric([value], count)
            yield metric


_WORKER_HELP = {
    "reconciled": "Reconciliations, by the state the session was left in",
    "storage_check": "Storage verifications, by outcome (verified, missing, unchecked)",
    "agora_query": "Queries to Agora's REST API, by HTTP status (0: no answer)",
    "alert_raised": "Alerts raised, by kind",
    "alert_resolved": "Alerts resolved, by kind",
}


# RQ workers heartbeat every few seconds; two minutes of silence means none is working.
WORKER_SILENCE_S = 120


def recent_workers(redis: Redis) -> int:
    """How many RQ workers sent a heartbeat within WORKER_SILENCE_S."""
    now = datetime.now(UTC)
    return sum(
        1
        for worker in registered_workers(redis)
        if worker.last_heartbeat is not None
        and (now - worker.last_heartbeat).total_seconds() < WORKER_SILENCE_S
    )


@dataclass(frozen=True)
class RegisteredWorker:
    """What the web side shows of one RQ worker."""

    name: str
    last_heartbeat: datetime | None
    successful_jobs: int
    failed_jobs: int
    working_seconds: float


# Fields of RQ's worker hash, as rq.Worker.refresh() reads them (rq is pinned).
_WORKER_FIELDS = ("last_heartbeat", "successful_job_count", "failed_job_count",
                  "total_working_time")  # fmt: skip


def registered_workers(redis: Redis) -> list[RegisteredWorker]:
    """RQ's registered workers, in one round trip after the registry's.

    Read from RQ's own registry and hashes, not through rq.Worker: building one (as
    Worker.all() does for each) raises the socket timeout of the connection pool it is
    handed to 415 s (rq 3.0, Worker._set_connection). On the web side that pool is the
    callback store's, so after one /readyz or /metrics a stalled Redis held callbacks for
    minutes instead of answering 503 within 2 s.
    """
    worker_keys = sorted(get_keys(connection=redis))
    pipe = redis.pipeline(transaction=False)
    for key in worker_keys:
        pipe.hmget(key, _WORKER_FIELDS)
    found = []
    for key, values in zip(worker_keys, pipe.execute(), strict=True):
        heartbeat, succeeded, failed, working = (as_text(v) if v else None for v in values)
        if not any((heartbeat, succeeded, failed, working)):
            continue  # registered, but its hash expired: a dead worker (RQ skips it too)
        found.append(RegisteredWorker(
            name=key.removeprefix(Worker.redis_worker_namespace_prefix),
            last_heartbeat=utcparse(heartbeat).replace(tzinfo=UTC) if heartbeat else None,
            successful_jobs=int(succeeded or 0),
            failed_jobs=int(failed or 0),
            working_seconds=float(working or 0),
        ))  # fmt: skip
    return found


def _lowest_score(redis: Redis, key: str) -> float | None:
    rows = cast(list[tuple[bytes, float]], redis.zrange(key, 0, 0, withscores=True))
    return float(rows[0][1]) if rows else None


def render(redis: Redis, queue: Queue, alerts: AlertStore, callbacks: CallbackStore) -> bytes:
    """The exposition text for /metrics: the processes' counters, then the pipeline gauges
    (distinct metric families, so the two texts simply follow each other)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        counters = CollectorRegistry()
        MultiProcessCollector(counters)  # type: ignore[no-untyped-call]  # unannotated upstream
    else:
        counters = REGISTRY
    pipeline = CollectorRegistry()
    pipeline.register(PipelineCollector(redis, queue, alerts, callbacks))
    return generate_latest(counters) + generate_latest(pipeline)
