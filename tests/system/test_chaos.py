"""The chaos ledger of bench/chaos.py (what `make chaos` runs with 20,000 callbacks) at a
size that fits the suite: signed callbacks for a few hundred sessions, reordered and partly
resent, while an RQ worker is killed -9 in the middle of a job, a gunicorn worker is killed
-9 and redis-server is killed -9 and restarted on its AOF. Nothing answered 2xx may be lost
or stored twice, every session must end in the state its events imply, and every alert
they imply must reach the signed webhook once.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.chaos import ChaosConfig, run

pytestmark = pytest.mark.system

CALLBACKS = int(os.environ.get("CHAOS_CALLBACKS", "2500"))


# RQ takes over the killed worker's job only after the job's timeout + 60 s (about two
# minutes), and the run waits for it: about 2.5 minutes in all here.
@pytest.mark.timeout(900)
def test_nothing_answered_2xx_is_lost_or_stored_twice_through_kills_and_a_redis_restart(
    tmp_path: Path,
):
    report = run(ChaosConfig(callbacks=CALLBACKS, work_dir=tmp_path))
    table = report.table()
    (tmp_path / "report.txt").write_text(table)

    assert report.failures == [], table
    # Every fault happened, and met traffic: the senders had to retry.
    assert {f.kind for f in report.faults} == {"rq_worker", "gunicorn_worker", "redis"}, table
    assert report.kills, table
    # RQ ran the killed job again, to the end (the ledger was read after that).
    assert all(k.outcome == "finished" for k in report.kills), table
    assert sum(report.answers.retries.values()) > 0, table
    assert report.ledger.alerts_due > 0, table
    assert report.ledger.alerts_fired == report.ledger.alerts_due, table
