"""`make bench`'s ingestion benchmark, end to end at a tiny size: it must keep working.

No figure is checked here (speed is the benchmark's business, not a test's); what is
checked is that every target answers, the ledger holds, and the report is complete.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench import ingest, instructions, reconcile

pytestmark = pytest.mark.system


def test_the_ingestion_benchmark_runs_every_target_and_keeps_an_exact_ledger(tmp_path: Path):
    code = ingest.main(
        ["--rounds", "1", "--seconds", "0.5", "--sessions", "80", "--breakdown",
         "--out", str(tmp_path)]
    )  # fmt: skip

    results = json.loads((tmp_path / "ingest-latest.json").read_text())
    assert code == 0
    assert set(results["peak_rps"]) == {*ingest.APPS, *ingest.VARIANTS}
    assert all(rate > 0 for rate in results["peak_rps"].values())
    # A variant whose script fails answers 503s at a fine rate: every answer must be a 200.
    assert results["non_200"] == dict.fromkeys(results["peak_rps"], 0)
    ledger = results["ledger"]
    assert ledger["answered_stored"] > 0
    assert ledger["missing"] == ledger["stored_twice"] == 0
    assert results["memory_per_event_bytes"] > 0
    half = results["half_peak"]
    assert half["offered_rps"] > 0
    for name in ("service", "floor"):  # the floor at the same rate, for the machine's own tail
        assert len(half[name]["p99_ms_each"]) == 1  # one per round
        assert half[name]["non_200"] == 0


def test_the_reconciliation_benchmark_drains_a_backlog_and_times_each_session(tmp_path: Path):
    # The backlog of terminal events waits for the worker's relay, which makes the jobs:
    # the benchmark must count it there (a version that counted only the RQ queue
    # measured 0 jobs/s once the web side stopped enqueuing).
    figures = reconcile.measure("simple", sessions=12, rate=40, work=tmp_path)

    assert figures["jobs"] == 2 * 12  # uploaded + session exit per session
    assert figures["jobs_per_s"] > 0
    assert figures["latency_p50_ms"] > 0


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_the_instruction_count_covers_every_target_and_only_the_counted_callbacks(
    tmp_path: Path,
):
    out = tmp_path / "instructions.json"
    assert instructions.main(["--calls", "100", "--out", str(out)]) == 0

    counts = json.loads(out.read_text())["per_callback"]
    assert set(counts) == set(instructions.TARGETS)
    # Zeroed after the warm-up (start-up alone is tens of millions) and not empty: each
    # script that does more than another counts more, and the SET least of all.
    assert 0 < counts["floor"] < counts["noop"] < counts["dedupe_log"] < counts["record"] < 10**7
