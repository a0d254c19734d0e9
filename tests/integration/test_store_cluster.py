"""The event store on a real Redis Cluster of three masters.

The summary rules and order independence are the single-primary specifications themselves
(test_store.py), run again against the cluster; then what is particular to the cluster:
global keys sharded across the nodes, lists merged back in order, hand-offs, refusals, and
the whole service (callback URL, API, worker, dashboard) with its store on the cluster.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from redis import Redis, RedisCluster
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from tests.conftest import SECRET, example_files, load_example, varied
from tests.integration import test_store as single
from tests.topologies import ClusterTopology
from webhook.app import create_app
from webhook.config import Settings
from webhook.events import FOLLOW_UP_EVENTS
from webhook.jobs import callback_queue
from webhook.schemas import load_callback
from webhook.signature import HEADER_V2, sign
from webhook.store import CallbackStore, Rejection, keys
from webhook.store.ratelimit import RefusalLimiter
from workers.context import configure, event_store_client
from workers.relay import relay_handoffs

NOW = 1_780_000_000_000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterTopology]:
    topology = ClusterTopology(tmp_path_factory.mktemp("cluster"))
    try:
        yield topology.start()
    finally:
        topology.stop()


@pytest.fixture
def redis(cluster: ClusterTopology) -> Iterator[RedisCluster]:
    """Overrides the single-primary fixture: the specifications below run on the cluster."""
    client = RedisCluster.from_url(cluster.url)
    client.flushall(target_nodes=RedisCluster.PRIMARIES)
    yield client
    client.close()


@pytest.fixture
def store(redis: RedisCluster) -> CallbackStore:
    return CallbackStore(redis, retention=timedelta(days=30), dedupe_window=timedelta(days=7))


class TestSummaryOnCluster(single.TestSummary):
    """Every summary rule of the single-primary store holds on the cluster."""


test_any_arrival_order_gives_the_same_summary_on_cluster = (
    single.test_any_arrival_order_gives_the_same_summary
)
test_a_redundant_copy_in_any_order_leaves_the_same_summary_on_cluster = (
    single.test_a_redundant_copy_in_any_order_leaves_the_same_summary
)


def store_session(store: CallbackStore, sid: str, at: int, cname: str = "class1024") -> str:
    body = varied(load_example("33_"), sid=sid, cname=cname, notice_id=f"n-{sid}-{at}")
    return store.record(load_callback(body), json.dumps(body).encode(), received_ms=at).outcome


def nodes_holding(redis: RedisCluster, key_names: list[str]) -> set[str]:
    return {
        redis.get_node_from_key(name).name  # type: ignore[no-untyped-call]  # unannotated upstream
        for name in key_names
        if redis.exists(name)
    }


class TestShardedGlobalKeys:
    def test_sessions_spread_over_every_node_and_list_back_newest_first(
        self, store: CallbackStore, redis: RedisCluster
    ):
        sids = [f"sid-{n:03d}" for n in range(120)]
        for n, sid in enumerate(sids):
            store_session(store, sid, NOW + n)

        shards = [keys.sessions_by_activity(s) for s in range(keys.SHARDS)]
        assert len(nodes_holding(redis, shards)) == 3
        pages, after = [], None
        while page := store.recent_sessions(after=after, limit=25):
            pages.append(page)
            after = (page[-1][1], page[-1][0])
        listed = [sid for page in pages for sid, _ in page]
        assert listed == sids[::-1]
        assert store.active_sessions() == len(sids)

    def test_a_channel_filter_merges_its_shards(self, store: CallbackStore):
        for n in range(30):
            store_session(store, f"sid-{n}", NOW + n, cname="room-a" if n % 3 else "room-b")

        found = [sid for sid, _ in store.recent_sessions(cname="room-b", limit=50)]

        assert found == [f"sid-{n}" for n in range(29, -1, -1) if n % 3 == 0]

    def test_a_session_the_app_reported_is_indexed_in_its_shard(self, store: CallbackStore):
        store_session(store, "heard-from", NOW, cname="room-c")
        store.note_activity("only-started", "room-c", NOW + 1)

        assert [sid for sid, _ in store.recent_sessions(limit=50)][:2] == [
            "only-started", "heard-from",
        ]  # fmt: skip
        found = [sid for sid, _ in store.recent_sessions(cname="room-c", limit=50)]
        assert found == ["only-started", "heard-from"]

    def test_counters_and_minutes_add_up_across_shards(self, store: CallbackStore):
        for n in range(20):
            store_session(store, f"sid-{n}", NOW)
        assert store_session(store, "sid-0", NOW) == "duplicate"

        assert store.stats() == {"stored": 20, "duplicate": 1}
        minute = store.outcomes_per_minute(NOW, minutes=1)
        assert minute == [(NOW // 60_000 * 60_000, {"stored": 20, "duplicate": 1})]

    def test_the_schema_version_is_written_when_the_store_starts(self, redis: RedisCluster):
        CallbackStore(redis)

        assert redis.get(keys.schema_version()) == str(keys.SCHEMA_VERSION).encode()


class TestHandoffsOnCluster:
    def test_a_follow_up_is_pending_until_its_job_confirms(self, store: CallbackStore):
        body = varied(load_example("31_"), sid="sid-up", notice_id="n-up")
        raw = json.dumps(body).encode()

        first = store.record(load_callback(body), raw, received_ms=NOW)
        again = store.record(load_callback(body), raw, received_ms=NOW + 5)

        assert (first.needs_handoff, again.outcome, again.needs_handoff) == (
            True,
            "duplicate",
            True,
        )
        assert store.pending_handoffs(older_than_ms=NOW + 10) == [
            ("sid-up", "n-up", first.entry_id)
        ]  # fmt: skip
        store.complete_handoff("sid-up", "n-up", first.entry_id)
        assert store.pending_handoffs(older_than_ms=NOW + 10) == []
        assert store.record(load_callback(body), raw, received_ms=NOW + 9).needs_handoff is False

    def test_pending_handoffs_come_oldest_first_from_every_shard(self, store: CallbackStore):
        for n in range(12):
            body = varied(load_example("31_"), sid=f"sid-{n}", notice_id=f"n-{n}")
            store.record(load_callback(body), json.dumps(body).encode(), received_ms=NOW + n)

        found = store.pending_handoffs(older_than_ms=NOW + 100, limit=5)

        assert [sid for sid, _, _ in found] == [f"sid-{n}" for n in range(5)]


class TestRefusalsOnCluster:
    def test_a_refusal_is_kept_counted_and_found_again_by_its_id(self, store: CallbackStore):
        rejection = Rejection(
            reason="signature_mismatch", status=401, message="no", received_ms=NOW,
            remote_addr="203.0.113.9", body=b"{}", body_truncated=False,
        )  # fmt: skip

        entry_id = store.record_rejected(rejection)

        assert entry_id.startswith("g")
        (listed,) = store.rejected()
        assert listed.entry_id == entry_id
        found = store.rejected_entry(entry_id)
        assert found is not None
        assert found.remote_addr == "203.0.113.9"
        assert store.rejected_entry(entry_id.partition("-")[2]) is None
        assert store.stats() == {"rejected:signature_mismatch": 1}

    def test_the_refusal_limiter_counts_per_client_on_the_cluster(self, redis: RedisCluster):
        limiter = RefusalLimiter(redis, limit=2, window=timedelta(minutes=1))

        verdicts = [limiter.hit("198.51.100.7", received_ms=NOW).limited for _ in range(3)]

        assert verdicts == [False, False, True]


@pytest.fixture
def service(
    cluster: ClusterTopology, redis: RedisCluster, settings: Settings
) -> Iterator[tuple[FlaskClient, Settings]]:
    configured = replace(settings, store_cluster_url=cluster.url, api_tokens=("ops",))
    main = Redis.from_url(settings.redis_url)
    main.flushall()
    event_store_client.cache_clear()
    yield create_app(configured).test_client(), configured
    event_store_client.cache_clear()
    main.flushall()


def test_the_whole_service_runs_with_its_event_store_on_the_cluster(
    service: tuple[FlaskClient, Settings], redis: RedisCluster, tmp_path: Path
):
    client, configured = service
    answers = []
    for path in example_files():
        raw = path.read_bytes()
        headers = {"Content-Type": "application/json", HEADER_V2: sign(raw, SECRET)}
        answers.append(client.post("/agora/callback", data=raw, headers=headers).get_json())
    assert answers == [{"result": "stored"}] * len(answers)

    # The worker relays the hand-offs from the cluster's shards, reads the callbacks there
    # and reconciles on the primary.
    configure(configured)
    main = Redis.from_url(configured.redis_url)
    queue = callback_queue(main, configured.queue_name)
    follow_ups = [
        p for p in example_files() if json.loads(p.read_text())["eventType"] in FOLLOW_UP_EVENTS
    ]
    assert relay_handoffs(CallbackStore(redis), queue) == len(follow_ups)
    SimpleWorker([queue], connection=main, serializer=JSONSerializer).work(burst=True)
    assert queue.failed_job_registry.count == 0
    store = CallbackStore(redis)
    assert store.pending_handoffs(older_than_ms=2**62) == []

    token = {"Authorization": "Bearer ops"}
    listed = client.get("/api/v1/recordings", headers=token).get_json()["recordings"]
    sids = {json.loads(p.read_text())["payload"]["sid"] for p in example_files()}
    assert {row["sid"] for row in listed} == sids
    sid = listed[0]["sid"]
    assert client.get(f"/api/v1/recordings/{sid}/events", headers=token).status_code == 200
    assert client.get("/readyz").get_json()["status"] == "ready"
    client.post("/dashboard/login", data={"token": "ops"})
    assert sid in client.get("/dashboard/sessions").text
