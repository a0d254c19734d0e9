"""CallbackStore against a real redis-server: the summary, order independence, retention."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import Redis

from tests.conftest import load_example, varied
from webhook.schemas import load_callback
from webhook.store import CallbackStore, Rejection, SessionSummary, keys

SID = "38f8e3cfdc474cd56fc1ceba380d7e1a"
RECEIVED_MS = 1_749_551_500_000


@pytest.fixture
def store(redis: Redis) -> CallbackStore:
    return CallbackStore(redis, retention=timedelta(days=30), dedupe_window=timedelta(days=7))


def event(
    prefix: str, sequence: int, sendts: int, notice_id: str, **details: Any
) -> dict[str, Any]:
    body = copy.deepcopy(load_example(prefix))
    body["noticeId"] = notice_id
    body["payload"].update(sequence=sequence, sendts=sendts)
    body["payload"]["details"].update(details)
    return body


def record(store: CallbackStore, body: dict[str, Any], received_ms: int = RECEIVED_MS) -> str:
    raw = json.dumps(body).encode()
    return store.record(load_callback(body), raw, received_ms=received_ms).outcome


def summary(store: CallbackStore) -> SessionSummary:
    found = store.session(SID)
    assert found is not None
    return found


class TestSummary:
    def test_progress_is_the_latest_by_event_time_not_by_arrival(self, store: CallbackStore):
        record(store, event("33_", 5, 2_000, "n2", progress=6000))
        record(store, event("33_", 4, 1_000, "n1", progress=3000))

        assert summary(store).upload_progress == 6000

    def test_upload_status_and_files_come_from_the_latest_upload_event(self, store: CallbackStore):
        backuped = event("32_", 23, 5_000, "n-backup")
        uploaded = event("31_", 22, 4_000, "n-upload")

        record(store, backuped)
        record(store, uploaded)

        found = summary(store)
        assert found.upload_status == "backuped"
        assert found.upload_ok is True
        assert [f.file_name for f in found.files] == [
            f["fileName"] for f in backuped["payload"]["details"]["fileList"]
        ]

    def test_an_empty_file_list_keeps_the_one_web_recording_gave(self, store: CallbackStore):
        # Web mode: the files come with web_recorder_stopped (71); uploaded has none, maybe [].
        stopped = varied(load_example("71_"), sid=SID, sequence=5, sendts=5_000)
        uploaded = varied(load_example("31_"), sid=SID, sequence=6, sendts=6_000, notice_id="u")
        uploaded["payload"]["details"]["fileList"] = []

        record(store, stopped)
        record(store, uploaded)

        found = summary(store)
        assert found.upload_status == "uploaded"
        expected = [f["filename"] for f in stopped["payload"]["details"]["fileList"]]
        assert expected
        assert [f.file_name for f in found.files] == expected

    def test_a_failed_upload_status_is_reported(self, store: CallbackStore):
        record(store, event("31_", 22, 4_000, "n1", status=1))

        assert summary(store).upload_ok is False

    def test_every_abnormal_upload_is_counted_even_when_a_later_one_is_normal(
        self, store: CallbackStore
    ):
        failed = event("31_", 22, 4_000, "n1", status=1)
        record(store, failed)
        record(store, failed)  # Agora's resend: counted once
        record(store, {**failed, "noticeId": "n1-copy"})  # a redundant copy: not counted
        record(store, event("32_", 23, 4_500, "n2", status=2))
        record(store, event("31_", 24, 5_000, "n3", status=0))

        found = summary(store)
        assert (found.upload_ok, found.upload_failures) == (True, 2)

    def test_sequence_gaps_count_the_numbers_never_received(self, store: CallbackStore):
        for sequence in (0, 1, 4, 6):
            record(store, event("33_", sequence, 1_000 + sequence, f"n{sequence}"))

        found = summary(store)
        assert found.max_sequence == 6
        assert found.sequence_gaps == 3  # 2, 3 and 5

    def test_a_huge_sequence_is_stored_but_not_tracked_for_gaps(
        self, store: CallbackStore, redis: Redis
    ):
        record(store, event("33_", 0, 1_000, "n0"))
        record(store, event("33_", 10**12, 2_000, "n-huge"))

        found = summary(store)
        assert found.events == 2
        assert found.sequence_beyond_limit == 1
        assert found.sequence_gaps == 0
        assert (redis.strlen(keys.sequences(SID)) or 0) < 1024

    def test_channel_user_and_times_come_from_the_earliest_event(self, store: CallbackStore):
        later = event("33_", 9, 9_000, "n9")
        later["payload"]["uid"] = "3957220413"  # after a failover
        record(store, later)
        record(store, event("40_", 0, 1_000, "n0"))

        found = summary(store)
        assert (found.cname, found.uid) == ("class1024", "527841")
        assert (found.first_event_ms, found.last_event_ms) == (1_000, 9_000)
        assert found.last_event_type == 33

    def test_an_event_without_sendts_never_decides_who_came_first(self, store: CallbackStore):
        broken = event("40_", 0, 0, "n-broken")
        del broken["payload"]["sendts"]
        broken["payload"]["uid"] = "999"
        record(store, broken)
        record(store, event("33_", 3, 5_000, "n3"))

        found = summary(store)
        assert found.uid == "527841"
        assert found.first_event_ms == 5_000
        assert found.invalid == 1

    def test_arrival_times_are_the_first_and_last_seen(self, store: CallbackStore):
        record(store, event("33_", 2, 2_000, "n2"), received_ms=RECEIVED_MS + 50)
        record(store, event("33_", 1, 1_000, "n1"), received_ms=RECEIVED_MS)

        found = summary(store)
        assert (found.first_seen_ms, found.last_seen_ms) == (RECEIVED_MS, RECEIVED_MS + 50)

    def test_an_unknown_session_has_no_summary(self, store: CallbackStore):
        assert store.session("nothing-here") is None


class TestIndexesAndRetention:
    def test_sessions_are_indexed_by_last_activity_and_channel(
        self, store: CallbackStore, redis: Redis
    ):
        record(store, event("33_", 1, 1_000, "n1"), received_ms=RECEIVED_MS)
        record(store, event("33_", 2, 2_000, "n2"), received_ms=RECEIVED_MS + 10)

        assert redis.zscore(keys.sessions_by_activity(), SID) == RECEIVED_MS + 10
        assert redis.zscore(keys.sessions_by_cname("class1024"), SID) == RECEIVED_MS + 10

    def test_every_key_of_a_session_expires(self, store: CallbackStore, redis: Redis):
        record(store, event("31_", 1, 1_000, "n1"))

        session_keys = list(redis.scan_iter(f"*{{{SID}}}*"))
        assert len(session_keys) == 5
        for key in session_keys:
            assert redis.ttl(key) > 0, key

    def test_keys_first_created_between_two_refreshes_expire_too(
        self, store: CallbackStore, redis: Redis
    ):
        no_sequence_no_channel = event("33_", 1, 1_000, "n1")
        del no_sequence_no_channel["payload"]["sequence"]
        del no_sequence_no_channel["payload"]["cname"]
        record(store, no_sequence_no_channel)

        record(store, event("33_", 2, 2_000, "n2"), received_ms=RECEIVED_MS + 10)

        assert redis.ttl(keys.sequences(SID)) > 0
        assert redis.ttl(keys.sessions_by_cname("class1024")) > 0

    def test_the_indexes_drop_sessions_older_than_the_retention(self, redis: Redis):
        short = CallbackStore(redis, retention=timedelta(seconds=60))
        record(short, event("33_", 1, 1_000, "n1"), received_ms=RECEIVED_MS)
        other = event("33_", 1, 1_000, "m1")
        other["payload"]["sid"] = "another-session"

        record(short, other, received_ms=RECEIVED_MS + 61_000)

        assert redis.zrange(keys.sessions_by_activity(), 0, -1) == [b"another-session"]

    def test_a_notice_is_remembered_for_the_dedupe_window_even_if_longer(self, redis: Redis):
        store = CallbackStore(redis, retention=timedelta(days=1), dedupe_window=timedelta(days=7))
        record(store, event("33_", 1, 1_000, "n1"))

        assert redis.ttl(keys.notices(SID)) > timedelta(days=6).total_seconds()
        assert redis.ttl(keys.events(SID)) <= timedelta(days=1).total_seconds()


# --- order independence -------------------------------------------------------------------

PREFIXES = ["33_", "33_", "33_", "31_", "32_", "40_", "43_", "44_", "11_", "41_"]


@st.composite
def deliveries(draw: st.DrawFn) -> list[dict[str, Any]]:
    """One session's events as Agora may deliver them: with resends and redundant copies."""
    count = draw(st.integers(min_value=1, max_value=12))
    sequences = draw(st.lists(st.integers(0, 40), min_size=count, max_size=count, unique=True))
    bodies = []
    for i, sequence in enumerate(sequences):
        prefix = draw(st.sampled_from(PREFIXES))
        sendts = draw(st.integers(1_000, 1_020))  # ties happen, and must not matter
        details: dict[str, Any] = {}
        if prefix == "33_":
            details["progress"] = draw(st.integers(0, 10000))
        if prefix in ("31_", "32_"):
            details["status"] = draw(st.sampled_from([0, 0, 1]))
        body = event(prefix, sequence, sendts, f"notice-{i:02d}", **details)
        if draw(st.booleans()) and i % 4 == 0:
            del body["payload"]["sendts"]  # invalid, still stored
        bodies.append(body)
        if draw(st.integers(0, 5)) == 0:
            bodies.append(body | {"notifyMs": body["notifyMs"] + 1})  # Agora's resend
    return bodies


@settings(
    max_examples=60,
    deadline=None,
    # The store is flushed by hand for every example; the fixture is only a connection.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(bodies=deliveries(), data=st.data())
def test_any_arrival_order_gives_the_same_summary(
    redis: Redis, bodies: list[dict[str, Any]], data: st.DataObject
) -> None:
    store = CallbackStore(redis)

    redis.flushall()
    for body in bodies:
        record(store, body)
    expected = summary(store)

    shuffled = data.draw(st.permutations(bodies))
    redis.flushall()
    for body in shuffled:
        record(store, body)

    assert summary(store) == expected


def test_a_redundant_copy_in_any_order_leaves_the_same_summary(store: CallbackStore, redis):
    original = event("31_", 23, 5_000, "n-a")
    copy_b = original | {"noticeId": "n-b"}

    record(store, original)
    record(store, copy_b)
    first = summary(store)
    redis.flushall()
    record(store, copy_b)
    record(store, original)

    assert summary(store) == first
    assert first.redundant == 1
    assert first.events == 1


class TestTrafficByMinute:
    def test_each_outcome_is_counted_in_its_arrival_minute(self, store: CallbackStore):
        minute = RECEIVED_MS // 60_000 * 60_000
        record(store, event("33_", 1, 1_000, "n1"), received_ms=minute + 1_000)
        record(store, event("33_", 1, 1_000, "n1"), received_ms=minute + 2_000)
        record(store, event("33_", 2, 2_000, "n2"), received_ms=minute + 61_000)
        store.record_rejected(
            Rejection(
                reason="signature_mismatch", status=401, message="no", body=b"{}",
                received_ms=minute + 62_000, remote_addr="10.0.0.1", body_truncated=False,
            )
        )  # fmt: skip

        rows = store.outcomes_per_minute(minute + 62_000, minutes=3)

        assert rows == [
            (minute - 60_000, {}),
            (minute, {"stored": 1, "duplicate": 1}),
            (minute + 60_000, {"stored": 1, "rejected:signature_mismatch": 1}),
        ]

    def test_minute_counters_expire_after_a_day(self, store: CallbackStore, redis: Redis):
        record(store, event("33_", 1, 1_000, "n1"))

        ttl = redis.ttl(keys.outcomes_in_minute(RECEIVED_MS // 60_000))

        assert 86_000 < ttl <= 86_400


def test_a_redis_that_lost_its_script_cache_still_stores_the_callback(
    store: CallbackStore, redis: Redis
):
    # A restarted or failed-over Redis starts with no scripts: the store loads its own.
    redis.script_flush()

    outcome = record(store, event("33_", 1, 1_000, "n1"))

    assert outcome == "stored"
    assert [e.notice_id for e in store.events(SID)] == ["n1"]
