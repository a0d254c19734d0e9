"""The hand-off relay: stored follow-up callbacks become RQ jobs, off the callback's path.

The record script writes a follow-up event's hand-off in the same atomic step as the event
(a pending entry, which the sweep falls back on, and a place on the ready list). The relay,
a thread in every worker process, waits on the ready list and enqueues each job. So the
web side answers Agora after one Redis round trip and never waits for RQ (whose enqueue
costs several times the callback's own store CPU), and an enqueue that fails is redone.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from redis.exceptions import RedisError
from rq import Queue

from webhook.errors import StoreUnavailableError
from webhook.jobs import enqueue_handoffs
from webhook.store import CallbackStore

logger = logging.getLogger(__name__)

# How long one wait on the ready list lasts; a stop request is noticed within it.
READY_WAIT = timedelta(seconds=2)
# Hand-offs taken per round trip when many are waiting (after an outage of the workers).
BATCH = 100
# After a Redis error, the relay waits this long before it tries again.
RETRY_AFTER_S = 1.0
# How long stop() waits for the thread.
STOP_GRACE_S = 1.0


def relay_handoffs(
    callbacks: CallbackStore, queue: Queue, *, wait: timedelta | None = None, limit: int = BATCH
) -> int:
    """Enqueue the jobs of the hand-offs waiting on the ready list; returns how many.

    wait: how long to wait for a first one (None: do not wait).

    Raises:
        StoreUnavailableError, RedisError: Redis failed. What was taken but not enqueued is
            still pending, and the sweep enqueues it (workers.reconcile.HANDOFF_GRACE_MS).
    """
    taken = callbacks.take_ready_handoffs(limit, block=wait)
    # A hand-off the sweep (or a resend) enqueued already is skipped.
    enqueue_handoffs(queue, taken)
    return len(taken)


class HandoffRelay:
    """relay_handoffs() in a loop, on a daemon thread beside the RQ worker."""

    def __init__(self, callbacks: CallbackStore, queue: Queue) -> None:
        self.callbacks, self.queue = callbacks, queue
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="handoff-relay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to end; give a batch being enqueued a moment to finish. A stopping
        worker does not wait out the relay's wait on the list: the thread is a daemon, and a
        hand-off it took without enqueuing is still pending, for the sweep."""
        self._stopping.set()
        self._thread.join(timeout=STOP_GRACE_S)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                relay_handoffs(self.callbacks, self.queue, wait=READY_WAIT)
            except (RedisError, StoreUnavailableError) as err:
                # One line a second while Redis is away, not a traceback. What this round
                # took is still pending: the two-minute sweep covers it.
                logger.warning("hand-off relay failed (%s: %s); trying again",
                               type(err).__name__, err)  # fmt: skip
                self._stopping.wait(RETRY_AFTER_S)
            except Exception:
                # Anything else: a thread that died would leave every hand-off to the sweep.
                logger.exception("hand-off relay failed; trying again")
                self._stopping.wait(RETRY_AFTER_S)
