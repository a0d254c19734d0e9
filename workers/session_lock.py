"""One job at a time per session, and a dead job's session freed within seconds.

A job holds its session's lock while it works. The lock's TTL is short and a thread of the
process holding it renews it while the job runs, so the lock outlives a worker killed in
the middle of a job by at most the TTL. With a TTL as long as the job timeout (60 s) a
session whose check died with its worker stayed locked for a minute, past the 30 s an
alert may be late; now the sweep takes it over within LOCK_TTL_S plus a sweep interval.

A job that hangs still ends: RQ's job timeout raises inside the `with` block, which releases
the lock; the renewal only ever extends a lock its process still holds.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from redis import Redis
from redis.exceptions import LockError, LockNotOwnedError, RedisError
from redis.lock import Lock

from webhook.store import keys

logger = logging.getLogger(__name__)

# Long enough for a process stalled by the machine to keep its locks (renewed every
# LOCK_RENEW_S, so a stall of LOCK_TTL_S - LOCK_RENEW_S is tolerated), short enough that a
# dead job's session is free well inside an alert's 30 s of grace.
LOCK_TTL_S = 15.0
LOCK_RENEW_S = 5.0
# A second job for a busy session waits this long, then RQ retries it.
LOCK_WAIT_S = 5.0


class SessionBusyError(Exception):
    """Another job holds the session; RQ retries this one shortly."""


class LockRenewer:
    """Extends every lock this process holds, from one daemon thread.

    One thread per process, started on first use in that process: a fork worker's work
    horse inherits the object but not the thread, and starts its own.
    """

    def __init__(self, *, ttl_s: float = LOCK_TTL_S, every_s: float = LOCK_RENEW_S) -> None:
        self.ttl_s = ttl_s
        self.every_s = every_s
        self._held: dict[int, tuple[Lock, str]] = {}
        self._mutex = threading.Lock()
        self._thread_pid: int | None = None
        # A child forked while the thread held the mutex would inherit it locked.
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._held = {}
        self._mutex = threading.Lock()
        self._thread_pid = None

    def hold(self, lock: Lock, sid: str) -> None:
        with self._mutex:
            self._held[id(lock)] = (lock, sid)
            if self._thread_pid != os.getpid():
                self._thread_pid = os.getpid()
                threading.Thread(target=self._run, name="session-lock-renewer", daemon=True).start()

    def drop(self, lock: Lock) -> None:
        with self._mutex:
            self._held.pop(id(lock), None)

    def renew_all(self) -> None:
        with self._mutex:
            held = list(self._held.values())
        for lock, sid in held:
            try:
                lock.extend(self.ttl_s, replace_ttl=True)
            except LockNotOwnedError:
                if self._is_held(lock):  # not merely released while we were renewing it
                    logger.warning("session lock lapsed while its job ran", extra={"sid": sid})
                    self.drop(lock)
            except (LockError, RedisError):
                # Redis unreachable: the job's own calls fail too; try again next round.
                logger.warning("could not renew a session lock", extra={"sid": sid}, exc_info=True)

    def _is_held(self, lock: Lock) -> bool:
        with self._mutex:
            return id(lock) in self._held

    def _run(self) -> None:
        pid = os.getpid()
        while self._thread_pid == pid:
            time.sleep(self.every_s)
            self.renew_all()


RENEWER = LockRenewer()


@contextmanager
def session_lock(
    redis: Redis, sid: str, *, renewer: LockRenewer = RENEWER, wait_s: float = LOCK_WAIT_S
) -> Iterator[None]:
    """Jobs for one session never interleave: the second waits briefly, then retries.

    Raises:
        SessionBusyError: another job held the session for wait_s.
    """
    # thread_local=False: the renewer's thread must see the token this thread took.
    lock = redis.lock(keys.session_lock(sid), timeout=renewer.ttl_s,
                      blocking_timeout=wait_s, thread_local=False)  # fmt: skip
    if not lock.acquire():
        raise SessionBusyError(sid)
    renewer.hold(lock, sid)
    try:
        yield
    finally:
        renewer.drop(lock)
        try:
            lock.release()
        except LockError:
            logger.warning("session lock lapsed before release", extra={"sid": sid})
