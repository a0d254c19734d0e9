"""The sweep keeper: the sweep chain restarted from every worker process, not only at start.

Each sweep schedules its successor first (workers/reconcile.py). When Redis refuses that
one write (out of memory, a failover's read-only moment, a dropped connection), the job
fails and no sweep is scheduled any more: lost hand-offs and due sessions (the backuped
check, the start and stop timeouts) would wait for a worker restart. A thread in every
worker makes sure the next interval's sweep is scheduled; the job id is one per interval
slot, so the keepers of many workers and the chain itself make one sweep between them.
"""

from __future__ import annotations

import logging
import threading

from redis.exceptions import RedisError

from webhook.store import now_ms
from workers.context import WorkerContext
from workers.reconcile import schedule_sweep

logger = logging.getLogger(__name__)

# How long stop() waits for the thread.
STOP_GRACE_S = 1.0


def keep_sweep_scheduled(ctx: WorkerContext, now: int) -> None:
    """Schedule the next interval slot's sweep unless it is scheduled already.

    Raises:
        RedisError: Redis refused; the next round tries again.
    """
    schedule_sweep(ctx, now + int(ctx.settings.sweep_interval.total_seconds() * 1000))


class SweepKeeper:
    """keep_sweep_scheduled() once per sweep interval, on a daemon thread beside the worker."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sweep-keeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=STOP_GRACE_S)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        interval = self.ctx.settings.sweep_interval.total_seconds()
        while not self._stopping.wait(interval):
            try:
                keep_sweep_scheduled(self.ctx, now_ms())
            except RedisError as err:
                logger.warning("could not make sure a sweep is scheduled (%s: %s); trying "
                               "again in %.0f s", type(err).__name__, err, interval)  # fmt: skip
            except Exception:  # a thread that died would leave the chain unguarded
                logger.exception("sweep keeper failed; trying again in %.0f s", interval)
