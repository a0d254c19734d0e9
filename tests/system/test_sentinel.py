"""The service on a Sentinel-managed primary (+ one replica, three Sentinels), through a
failover in the middle of the traffic: how many acknowledged callbacks survive.

Replication is asynchronous: a primary that dies can take with it what it acknowledged
but had not yet sent to its replica. AGORA_STORE_MIN_REPLICAS=1 makes the store WAIT for
a replica before answering 200, which closes that window (at the cost of refusing writes,
503, while no replica is attached).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from redis import Redis

from tests.conftest import SECRET, load_example, run_worker_once
from tests.topologies import MASTER_NAME, SentinelTopology, wait_until
from webhook.app import create_app
from webhook.config import Settings
from webhook.jobs import callback_queue
from webhook.signature import HEADER_V2, sign
from webhook.store import CallbackStore, connect

pytestmark = pytest.mark.system

SESSIONS = 40


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[SentinelTopology]:
    topology = SentinelTopology(tmp_path)
    try:
        yield topology.start()
    finally:
        topology.stop()


@dataclass
class Sender:
    """Agora, roughly: sends each callback until it is answered 2xx; records the 2xx."""

    client: FlaskClient
    bodies: list[dict[str, object]]
    acknowledged: dict[str, str] = field(default_factory=dict)  # noticeId -> sid
    refused: int = 0
    sent: int = 0

    def run(self) -> None:
        for body in self.bodies:
            body["notifyMs"] = int(time.time() * 1000)
            raw = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", HEADER_V2: sign(raw, SECRET)}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                answer = self.client.post("/agora/callback", data=raw, headers=headers)
                if answer.status_code == 200:
                    self.acknowledged[str(body["noticeId"])] = str(body["sid"])
                    break
                assert answer.status_code == 503, answer.text
                self.refused += 1
                time.sleep(0.05)
            self.sent += 1


def traffic() -> list[dict[str, object]]:
    """Per session: recorder start, ten progress ticks, uploaded (a follow-up event)."""
    bodies = []
    for n in range(SESSIONS):
        sid = f"sentinel{n:024d}"
        for sequence, prefix in enumerate(["40_"] + ["33_"] * 10 + ["31_"]):
            body = load_example(prefix)
            body["noticeId"] = f"{sid}-{sequence}"
            body["sid"] = sid
            body["payload"].update(sid=sid, sequence=sequence)
            bodies.append(body)
    return bodies


def lost(store: CallbackStore, acknowledged: dict[str, str]) -> tuple[int, int]:
    """(acknowledged but missing, stored more than once) on the current primary."""
    stored: dict[str, int] = {}
    for sid in set(acknowledged.values()):
        for event in store.events(sid):
            stored[event.notice_id] = stored.get(event.notice_id, 0) + 1
    missing = sum(1 for notice_id in acknowledged if notice_id not in stored)
    return missing, sum(1 for count in stored.values() if count > 1)


@pytest.mark.parametrize("min_replicas", [0, 1], ids=["async", "wait-for-replica"])
def test_a_failover_mid_traffic_loses_only_what_replication_allows(
    topology: SentinelTopology, settings: Settings, min_replicas: int, capsys
):
    configured = replace(
        settings, redis_url="redis://unused:1/0", redis_sentinels=topology.addresses,
        redis_sentinel_master=MASTER_NAME, store_min_replicas=min_replicas,
    )  # fmt: skip
    sender = Sender(create_app(configured).test_client(), traffic())
    thread = threading.Thread(target=sender.run)
    thread.start()
    wait_until(lambda: sender.sent >= len(sender.bodies) // 3, 60, "a third of the traffic")

    old_primary = topology.primary
    topology.failover(kill=True)
    failed_over_at = sender.sent
    # The old primary comes back; the sentinels turn it into the new primary's replica.
    old_primary.start()
    thread.join(timeout=120)

    assert not thread.is_alive()
    redis = connect(configured.redis_url, timeout=None, sentinels=configured.redis_sentinels,
                    sentinel_master=MASTER_NAME)  # fmt: skip
    missing, twice = lost(CallbackStore(redis), sender.acknowledged)
    with capsys.disabled():
        print(  # noqa: T201  # the figure the issue asks to report
            f"\nsentinel failover (kill -9 of the primary after {failed_over_at} callbacks, "
            f"min_replicas={min_replicas}): acknowledged {len(sender.acknowledged)}, "
            f"lost {missing}, stored twice {twice}, 503s answered {sender.refused}"
        )
    assert len(sender.acknowledged) == len(sender.bodies)
    assert twice == 0
    if min_replicas:
        assert missing == 0

    # The workers follow the primary too: every follow-up event is relayed and reconciled
    # there (the pending and ready hand-offs replicate with the event that made them).
    run_worker_once(redis, configured)
    queue = callback_queue(redis, configured.queue_name)
    assert queue.failed_job_registry.count == 0
    assert queue.finished_job_registry.count >= SESSIONS - missing


def test_a_graceful_failover_with_wait_loses_nothing(
    topology: SentinelTopology, settings: Settings
):
    # SENTINEL FAILOVER does not pause writes on the old primary: between the replica's
    # promotion and the old primary's demotion, what the old primary acknowledges is
    # dropped when it resyncs (redis/redis#4819; a clean-clone run here lost 15 of 480
    # without WAIT). With WAIT those writes find no replica, are answered 503, and Agora's
    # retry lands on the new primary.
    configured = replace(
        settings, redis_url="redis://unused:1/0", redis_sentinels=topology.addresses,
        redis_sentinel_master=MASTER_NAME, store_min_replicas=1,
    )  # fmt: skip
    sender = Sender(create_app(configured).test_client(), traffic())
    thread = threading.Thread(target=sender.run)
    thread.start()
    wait_until(lambda: sender.sent >= len(sender.bodies) // 3, 60, "a third of the traffic")

    topology.failover(kill=False)
    thread.join(timeout=120)

    redis = Redis(port=topology.primary_port())
    assert lost(CallbackStore(redis), sender.acknowledged) == (0, 0)
    assert len(sender.acknowledged) == len(sender.bodies)
