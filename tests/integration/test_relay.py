"""workers.relay: every stored follow-up callback becomes exactly one job, off the web side."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from redis import Redis

from tests.conftest import PostCallback, load_example, varied
from webhook.config import Settings
from webhook.jobs import callback_job_id, callback_queue
from webhook.store import CallbackStore, now_ms
from workers.context import build_context
from workers.reconcile import HANDOFF_GRACE_MS, requeue_lost_handoffs
from workers.relay import READY_WAIT, HandoffRelay, relay_handoffs

SID = load_example("31_")["payload"]["sid"]


def uploaded(notice_id: str, sequence: int) -> dict[str, Any]:
    return varied(load_example("31_"), notice_id=notice_id, sequence=sequence)


def test_each_stored_follow_up_becomes_one_job_oldest_first(
    post_callback: PostCallback, redis: Redis, settings: Settings
):
    post_callback(uploaded("n-1", 1))
    post_callback(uploaded("n-2", 2))
    post_callback(load_example("33_"))  # a progress tick: no hand-off
    queue = callback_queue(redis, settings.queue_name)

    relayed = relay_handoffs(CallbackStore(redis), queue)

    assert relayed == 2
    assert queue.job_ids == [callback_job_id(SID, "n-1"), callback_job_id(SID, "n-2")]
    assert redis.llen("agora:handoffs:ready") == 0
    assert relay_handoffs(CallbackStore(redis), queue) == 0


def test_a_resend_while_the_job_waits_does_not_make_a_second_job(
    post_callback: PostCallback, redis: Redis, settings: Settings
):
    post_callback(uploaded("n-1", 1))
    queue = callback_queue(redis, settings.queue_name)
    relay_handoffs(CallbackStore(redis), queue)

    post_callback(uploaded("n-1", 1))  # Agora's resend: pushed again while pending
    relay_handoffs(CallbackStore(redis), queue)

    assert queue.job_ids == [callback_job_id(SID, "n-1")]


def test_a_hand_off_whose_job_finished_meanwhile_is_not_enqueued_again(
    post_callback: PostCallback, redis: Redis, settings: Settings
):
    post_callback(uploaded("n-1", 1))
    store = CallbackStore(redis)
    (event,) = store.events(SID)
    store.complete_handoff(SID, "n-1", event.entry_id)  # e.g. the sweep's job ran first

    relayed = relay_handoffs(store, callback_queue(redis, settings.queue_name))

    assert relayed == 0
    assert callback_queue(redis, settings.queue_name).count == 0


def test_a_hand_off_taken_but_never_enqueued_is_enqueued_by_the_sweep(
    post_callback: PostCallback, redis: Redis, settings: Settings
):
    post_callback(uploaded("n-1", 1))
    store = CallbackStore(redis)
    assert len(store.take_ready_handoffs()) == 1  # a relay that died right after
    ctx = build_context(settings, redis)

    assert requeue_lost_handoffs(ctx, now_ms()) == 0  # within the grace period
    requeued = requeue_lost_handoffs(ctx, now_ms() + HANDOFF_GRACE_MS + 1)

    assert requeued == 1
    assert ctx.queue.job_ids == [callback_job_id(SID, "n-1")]


def test_a_waiting_relay_takes_a_hand_off_stored_while_it_waits(
    post_callback: PostCallback, redis: Redis, settings: Settings
):
    queue = callback_queue(redis, settings.queue_name)
    relayed: list[int] = []
    waiting = threading.Thread(
        target=lambda: relayed.append(
            relay_handoffs(CallbackStore(redis), queue, wait=timedelta(seconds=30))
        )
    )
    waiting.start()

    post_callback(uploaded("n-1", 1))
    waiting.join(timeout=30)

    assert relayed == [1]
    assert queue.job_ids == [callback_job_id(SID, "n-1")]


def test_the_relay_thread_enqueues_until_stopped(
    post_callback: PostCallback, redis: Redis, settings: Settings
):
    queue = callback_queue(redis, settings.queue_name)
    relay = HandoffRelay(CallbackStore(redis), queue)
    relay.start()
    try:
        post_callback(uploaded("n-1", 1))
        deadline = time.monotonic() + 30
        while queue.count == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        relay.stop()

    assert queue.job_ids == [callback_job_id(SID, "n-1")]
    post_callback(uploaded("n-2", 2))  # after the stop: left for the next relay
    deadline = time.monotonic() + READY_WAIT.total_seconds() + 5
    while relay.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not relay.is_alive()
    assert redis.llen("agora:handoffs:ready") + queue.count == 2


def test_the_relay_thread_outlives_a_redis_it_cannot_reach(
    settings: Settings, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.WARNING, logger="workers.relay")
    unreachable = Redis(port=1, socket_connect_timeout=0.2)  # nothing listens on port 1
    relay = HandoffRelay(CallbackStore(unreachable), callback_queue(unreachable, "q"))
    relay.start()
    deadline = time.monotonic() + 10  # redis-py's own retries come first
    while not [r for r in caplog.records if r.name == "workers.relay"]:
        assert time.monotonic() < deadline, "the relay said nothing of its failure"
        time.sleep(0.05)

    alive = relay.is_alive()
    relay.stop()

    assert alive
    # One line per try while Redis is away, not a traceback each second.
    (failed, *_) = [r for r in caplog.records if r.name == "workers.relay"]
    assert failed.getMessage().startswith("hand-off relay failed (")
    assert failed.exc_info is None
