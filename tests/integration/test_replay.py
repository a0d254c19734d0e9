"""Replays: a captured signed callback sent again later is never stored twice.

The store keeps a noticeId for the whole dedupe window whatever the TTL drift.
"""

from __future__ import annotations

import json
from datetime import timedelta

from redis import Redis

from tests.conftest import load_example
from webhook.schemas import load_callback
from webhook.store import CallbackStore, keys, now_ms

SID = "38f8e3cfdc474cd56fc1ceba380d7e1a"


class TestDedupeWindowIsKept:
    """The store remembers a noticeId for the whole dedupe window despite TTL drift."""

    def test_the_notices_ttl_adds_the_refresh_interval_to_the_window(self, redis: Redis):
        store = CallbackStore(redis, retention=timedelta(days=1), dedupe_window=timedelta(days=1))
        body = load_example("33_")
        store.record(load_callback(body), json.dumps(body).encode(), received_ms=now_ms())

        # TTLs are pushed back at most once an hour here: a notice added just before the
        # next push would otherwise be forgotten an hour early.
        assert redis.ttl(keys.notices(SID)) >= timedelta(days=1, hours=1).total_seconds() - 5

    def test_a_redundant_copy_pushes_the_notices_ttl_back(self, redis: Redis):
        store = CallbackStore(redis, retention=timedelta(days=1), dedupe_window=timedelta(days=1))
        body = load_example("31_")
        store.record(load_callback(body), json.dumps(body).encode(), received_ms=now_ms())
        redis.expire(keys.notices(SID), 60)  # as if the last push was long ago
        copy = body | {"noticeId": "f" * 32}

        outcome = store.record(load_callback(copy), json.dumps(copy).encode(), received_ms=now_ms())

        assert outcome.outcome == "redundant"
        assert redis.ttl(keys.notices(SID)) > timedelta(days=1).total_seconds()
