"""`python -m workers`: one RQ worker with the scheduler, configured from the environment."""

from __future__ import annotations

import logging
import sys
import time

from redis.exceptions import RedisError
from rq import SimpleWorker, Worker
from rq.serializers import JSONSerializer

from webhook.config import Settings, redact_url
from webhook.errors import ConfigError
from webhook.jobs import callback_queue
from webhook.logconfig import configure_logging
from webhook.store import connect
from workers.context import WorkerContext, build_context, configure
from workers.reconcile import seed_sweep
from workers.relay import HandoffRelay
from workers.storage import StorageConfig, StorageConfigError
from workers.sweep_keeper import SweepKeeper

logger = logging.getLogger("workers")

# RQ's default is 10 minutes. At 30 s, a dead worker's job (abandoned after its timeout
# plus 60 s) and a dead scheduler are taken over within about two minutes.
MAINTENANCE_INTERVAL_S = 30
# An idle worker blocks on the queue for worker_ttl - 15 s and runs its maintenance (the
# scheduler lock, taking over a dead worker's jobs) only between two blocks: RQ's default
# 420 s left a quiet system without a scheduler for ~7 minutes after a worker died (make
# chaos --quiet). 45 s makes the block 30 s, the maintenance interval.
WORKER_TTL_S = 45
# A worker started while Redis is away or refuses writes (a replica, out of memory) waits
# for it, trying again after 1, 2, 4 ... and at most every 15 s.
START_RETRY_MAX_S = 15.0


def seed_sweep_when_redis_takes_it(ctx: WorkerContext) -> None:
    """seed_sweep(), retried until Redis takes the write. Exiting instead made a worker
    fail within a second of each start, and systemd gives up after five (StartLimitBurst):
    the worker then stayed down after Redis came back."""
    delay = 1.0
    while True:
        try:
            seed_sweep(ctx)
            return
        except RedisError as err:
            logger.warning("Redis does not take the sweep's schedule yet (%s: %s); trying again "
                           "in %.0f s", type(err).__name__, err, delay)  # fmt: skip
            time.sleep(delay)
            delay = min(delay * 2, START_RETRY_MAX_S)


def main() -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as err:
        print(f"configuration error: {err.message}", file=sys.stderr)  # noqa: T201  # before logging exists
        return 2
    if settings.storage_config_path:
        # Read now, so a malformed file stops the start with its reason; a check meeting
        # one later (edited meanwhile) says so in its alert instead.
        try:
            StorageConfig.from_file(settings.storage_config_path)
        except StorageConfigError as err:
            print(f"configuration error: {err.message}", file=sys.stderr)  # noqa: T201  # before logging exists
            return 2
    configure_logging(settings.log_format, settings.log_level)
    configure(settings)
    # No timeout of ours: RQ raises the socket timeout for its own blocking pops on the
    # queue (minutes at a time), and the relay's waits are shorter than redis-py's default.
    redis = connect(
        settings.redis_url, timeout=None,
        sentinels=settings.redis_sentinels, sentinel_master=settings.redis_sentinel_master,
    )  # fmt: skip
    queue = callback_queue(redis, settings.queue_name)
    ctx = build_context(settings, redis)
    # The sweep reschedules itself; seeding it here restarts the chain after any outage,
    # and the keeper restarts it if a sweep could not schedule its successor. Before RQ's
    # Worker, which talks to Redis as it is made.
    try:
        seed_sweep_when_redis_takes_it(ctx)
    except KeyboardInterrupt:
        return 0  # Ctrl-C while waiting for Redis: nothing was started
    # simple (default): no fork, 3x the jobs/s (make bench: ~170 vs ~56 jobs/s here); our
    # jobs are short, time-limited and let errors reach RQ. fork: a work horse per job, so
    # a crashing or leaking job cannot take the worker with it.
    worker_class = SimpleWorker if settings.worker_class == "simple" else Worker
    worker = worker_class(
        [queue],
        connection=redis,
        serializer=JSONSerializer,
        maintenance_interval=MAINTENANCE_INTERVAL_S,
        worker_ttl=WORKER_TTL_S,
    )
    keeper = SweepKeeper(ctx)
    keeper.start()
    # Stored follow-up callbacks become jobs here, not on the web side (workers/relay.py).
    relay = HandoffRelay(ctx.callbacks, queue)
    relay.start()
    logger.info("worker starting: queue=%s redis=%s", queue.name, redact_url(settings.redis_url))
    level = logging.getLevelName(logger.getEffectiveLevel())
    try:
        worker.work(with_scheduler=True, logging_level=level)
    except RedisError:
        # RQ's teardown after a lost connection: the same case as below.
        logger.exception("worker stopped: Redis failed")
        return 1
    finally:
        relay.stop()
        keeper.stop()
    # RQ's work() also returns after an unhandled error (a Redis restart, say) without
    # anyone asking it to stop; a non-zero status makes systemd, Kubernetes or compose
    # start a fresh worker. (RQ notes a stop request, SIGTERM or SIGINT, only in a private
    # attribute: the time it arrived.)
    if getattr(worker, "_shutdown_requested_date", None) is None:
        logger.error("worker stopped without a stop request; exiting 1 to be restarted")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
