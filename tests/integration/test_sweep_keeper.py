"""The sweep chain survives a sweep that could not schedule its successor."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from redis import Redis
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from webhook.config import Settings
from webhook.store import now_ms
from workers import reconcile
from workers.context import WorkerContext, build_context, configure
from workers.sweep_keeper import SweepKeeper, keep_sweep_scheduled


@pytest.fixture
def ctx(settings: Settings, redis: Redis) -> WorkerContext:
    configure(settings)
    return build_context(settings, redis)


def sweeps(ctx: WorkerContext) -> list[str]:
    waiting = ctx.queue.scheduled_job_registry.get_job_ids() + ctx.queue.get_job_ids()
    return sorted(j for j in waiting if j.startswith(reconcile.SWEEP_JOB_ID))


def run_due_jobs(ctx: WorkerContext) -> None:
    SimpleWorker([ctx.queue], connection=ctx.redis, serializer=JSONSerializer).work(
        burst=True, with_scheduler=True
    )


def test_a_sweep_that_cannot_schedule_its_successor_ends_the_chain_until_the_keeper_runs(
    ctx: WorkerContext, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    reconcile.seed_sweep(ctx)  # as `python -m workers` does: due in a second
    time.sleep(1.1)
    real_schedule = reconcile.schedule_sweep

    def out_of_memory_meanwhile(ctx: WorkerContext, at_ms: int) -> None:
        redis.config_set("maxmemory", 1)  # Redis full at the moment the sweep runs
        try:
            real_schedule(ctx, at_ms)
        finally:
            redis.config_set("maxmemory", 0)

    monkeypatch.setattr(reconcile, "schedule_sweep", out_of_memory_meanwhile)
    run_due_jobs(ctx)
    monkeypatch.undo()
    assert sweeps(ctx) == []  # what used to last until a worker restarted

    keep_sweep_scheduled(ctx, now_ms())

    assert len(sweeps(ctx)) == 1


def test_the_keeper_and_the_chain_make_one_sweep_per_interval(ctx: WorkerContext) -> None:
    now = now_ms() // 60_000 * 60_000 + 1_000  # early in an interval slot
    keep_sweep_scheduled(ctx, now)
    keep_sweep_scheduled(ctx, now + 10)  # another worker's keeper
    reconcile.schedule_sweep(ctx, now + 60_000)  # the chain: a sweep scheduling its next

    assert len(sweeps(ctx)) == 1


@pytest.fixture
def keeper(ctx: WorkerContext) -> Iterator[SweepKeeper]:
    quick = dataclasses.replace(ctx.settings, sweep_interval=timedelta(seconds=1))
    keeper = SweepKeeper(dataclasses.replace(ctx, settings=quick))
    keeper.start()
    yield keeper
    keeper.stop()


def test_the_keeper_schedules_a_sweep_each_interval_and_outlives_redis_refusing(
    keeper: SweepKeeper, ctx: WorkerContext, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    redis.config_set("maxmemory", 1)
    time.sleep(1.5)  # a round refused
    redis.config_set("maxmemory", 0)
    assert sweeps(ctx) == []
    assert "could not make sure a sweep is scheduled (OutOfMemoryError" in caplog.text

    deadline = time.monotonic() + 5
    while not sweeps(ctx):
        assert time.monotonic() < deadline, "the keeper scheduled no sweep"
        time.sleep(0.1)
    assert keeper.is_alive()
