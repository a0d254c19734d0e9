"""The per-session lock of the workers, against real Redis and real processes.

Short TTLs here stand for the real 15 s: what is specified is the renewal while the holder
lives and the lapse once it is dead, not how fast either happens.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable

import pytest
from redis import Redis

from webhook.store import keys
from workers.session_lock import LockRenewer, SessionBusyError, session_lock

SID = "5f2b0c0d4d1f4a6e9f3b2a1c0d9e8f7a"
TTL_S = 1.5
RENEW_S = 0.25


def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.fixture
def renewer() -> LockRenewer:
    return LockRenewer(ttl_s=TTL_S, every_s=RENEW_S)


def test_a_held_lock_is_renewed_for_as_long_as_its_job_runs(redis: Redis, renewer: LockRenewer):
    lock_key = keys.session_lock(SID)
    with session_lock(redis, SID, renewer=renewer):
        time.sleep(3 * TTL_S)
        assert redis.exists(lock_key), "outlived its TTL while held"
        assert 0 < redis.pttl(lock_key) <= TTL_S * 1000
    assert not redis.exists(lock_key), "released at the end of the job"


def test_a_second_job_for_a_held_session_is_refused_after_waiting(
    redis: Redis, renewer: LockRenewer
):
    second_job = session_lock(redis, SID, renewer=renewer, wait_s=0.3)
    with session_lock(redis, SID, renewer=renewer), pytest.raises(SessionBusyError), second_job:
        pytest.fail("two jobs held one session")
    with session_lock(redis, SID, renewer=renewer, wait_s=0.3):
        pass  # free again once the first job is done


def test_jobs_of_other_sessions_are_not_held_up(redis: Redis, renewer: LockRenewer):
    with session_lock(redis, SID, renewer=renewer), session_lock(redis, "other", renewer=renewer):
        assert redis.exists(keys.session_lock(SID), keys.session_lock("other")) == 2


def _hold_forever(url: str, renewer: LockRenewer, held: threading.Event) -> None:
    with session_lock(Redis.from_url(url), SID, renewer=renewer):
        held.set()
        time.sleep(3600)


def test_the_lock_of_a_killed_worker_lapses_within_its_ttl(redis: Redis, renewer: LockRenewer):
    # The renewer already runs here, as in a fork worker's parent: the forked child must
    # start a thread of its own.
    with session_lock(redis, "parent-session", renewer=renewer):
        pass
    url = redis.get_connection_kwargs()
    context = multiprocessing.get_context("fork")
    held = context.Event()
    child = context.Process(
        target=_hold_forever,
        args=(f"redis://{url['host']}:{url['port']}/0", renewer, held),
        daemon=True,
    )
    child.start()
    try:
        assert held.wait(10)
        lock_key = keys.session_lock(SID)
        time.sleep(3 * TTL_S)
        assert redis.exists(lock_key), "the living child's thread renews its lock"
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        assert wait_until(lambda: not redis.exists(lock_key), TTL_S + 1)
        with session_lock(redis, SID, renewer=renewer, wait_s=0):
            pass  # the sweep takes the session over
    finally:
        if child.is_alive():
            child.kill()


def test_a_lock_lost_during_its_job_is_reported_and_no_longer_renewed(
    redis: Redis, renewer: LockRenewer, caplog: pytest.LogCaptureFixture
):
    lock_key = keys.session_lock(SID)
    with caplog.at_level(logging.WARNING), session_lock(redis, SID, renewer=renewer):
        redis.delete(lock_key)  # as if Redis lost it, or a stall outlasted the TTL
        renewer.renew_all()
        assert not redis.exists(lock_key), "renewal never takes a lock it lost"
        redis.set(lock_key, "another job", px=10_000)
        renewer.renew_all()
    assert redis.get(lock_key) == b"another job", "and never releases another job's"
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "session lock lapsed while its job ran",
        "session lock lapsed before release",
    ]
