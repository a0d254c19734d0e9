"""Reconciliation against real Redis and a real S3-compatible server, with a controlled clock.

The five-minute rule above all: a backuped recording whose files are not in the customer's
bucket five minutes later raises a critical alert, and the alert resolves when they appear.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from rq import SimpleWorker
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer

from simulator.config import SimulatorConfig
from simulator.server import SimulatorServer
from simulator.service import CloudRecordingService
from tests.conftest import load_example, varied
from tests.integration.s3_server import S3Server
from webhook.agora_client import AgoraClient
from webhook.config import Settings
from webhook.jobs import enqueue_callback, reconcile_job_id
from webhook.recordings import StartCall, StopCall
from webhook.redis_server import free_port
from webhook.schemas import load_callback
from webhook.store import keys, now_ms
from workers import notify
from workers.callbacks import follow_up_callback
from workers.context import WorkerContext, build_context, configure, storage_verifier
from workers.reconcile import reconcile

SID = "38f8e3cfdc474cd56fc1ceba380d7e1a"
T0 = 1_749_549_600_000
MIN = 60_000
PLAYLISTS = [
    f"{SID}_class1024__uid_s_57297__uid_e_audio.m3u8",
    f"{SID}_class1024__uid_s_10230__uid_e_audio.m3u8",
]


@pytest.fixture
def storage_config(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> str:
    path = tmp_path / "storage.json"
    path.write_text(json.dumps({"buckets": {s3_bucket: {
        "access_key_id": s3_server.access_key_id,
        "secret_access_key": s3_server.secret_access_key,
        "endpoint_url": s3_server.endpoint_url,
    }}}))  # fmt: skip
    return str(path)


@pytest.fixture
def ctx(settings: Settings, redis: Redis, storage_config: str) -> Iterator[WorkerContext]:
    storage_verifier.cache_clear()
    notify.configured_sinks.cache_clear()
    configured = replace(settings, storage_config_path=storage_config)
    configure(configured)
    yield build_context(configured, redis)
    storage_verifier.cache_clear()


def start(bucket: str, at: int = T0) -> StartCall:
    return StartCall(
        resource_id="rid-1", cname="class1024", uid="527841", mode="individual",
        client_request={"recordingConfig": {"maxIdleTime": 30},
                        "storageConfig": {"vendor": 11, "region": 0, "bucket": bucket,
                                          "fileNamePrefix": ["recordings"],
                                          "extensionParams": {"endpoint": "http://unused"}}},
        started_ms=at,
    )  # fmt: skip


def deliver(ctx: WorkerContext, prefix: str, sequence: int, at: int, **details: Any) -> None:
    body = load_example(prefix)
    body["noticeId"] = f"{prefix}{sequence:04d}".replace("_", "n")
    body["payload"].update(sequence=sequence, sendts=at)
    body["payload"]["details"].update(details)
    ctx.callbacks.record(load_callback(body), json.dumps(body).encode(), received_ms=at)


def deliver_to(
    ctx: WorkerContext,
    sid: str,
    prefix: str,
    sequence: int,
    at: int,
    received_at: int | None = None,
) -> None:
    """Like deliver(), for another session (and received when it says, if it says)."""
    body = varied(load_example(prefix), sid=sid, sequence=sequence, sendts=at,
                  notice_id=f"{sid}-{prefix}{sequence}")  # fmt: skip
    ctx.callbacks.record(load_callback(body), json.dumps(body).encode(),
                         received_ms=at if received_at is None else received_at)  # fmt: skip


def put_recording(s3: S3Server, bucket: str, playlist: str, *, name: str | None = None) -> None:
    """A playlist and its two segments, as Agora's uploader writes them."""
    client = s3.client()
    stem = playlist.removesuffix(".m3u8")
    segments = [f"{stem}_2025061010000{i}000.ts" for i in range(2)]
    text = (
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:15\n"
        + "".join(f"#EXTINF:15.0,\n{segment}\n" for segment in segments)
        + "#EXT-X-ENDLIST\n"
    )
    client.put_object(Bucket=bucket, Key=f"recordings/{name or playlist}", Body=text.encode())
    for segment in segments:
        client.put_object(Bucket=bucket, Key=f"recordings/{segment}", Body=b"\x47" * 188)
    client.close()


def backuped_session(ctx: WorkerContext, bucket: str) -> int:
    """Start, recorder events, then backuped at T0 + 10 min. Returns the backuped time."""
    ctx.recordings.record_start(SID, start(bucket))
    deliver(ctx, "40_", 0, T0 + 1000)
    deliver(ctx, "30_", 1, T0 + 1100)
    backuped_at = T0 + 10 * MIN
    deliver(ctx, "32_", 23, backuped_at)
    ctx.recordings.mark_backuped(SID, backuped_at)
    return backuped_at


def stopped_backuped(ctx: WorkerContext, bucket: str) -> int:
    """Start, the recorder's start, then a stop answering backuped at T0 + 10 min (its time)."""
    ctx.recordings.record_start(SID, start(bucket))
    deliver(ctx, "40_", 0, T0 + 1000)
    stopped_at = T0 + 10 * MIN
    ctx.recordings.record_stop(SID, StopCall(200, None, "backuped", tuple(PLAYLISTS), {},
                                             stopped_at))  # fmt: skip
    return stopped_at


def stopped_not_completed(ctx: WorkerContext, bucket: str) -> int:
    """Start, the recorder's start, then a stop answering 206 code 65 at T0 + 10 min."""
    ctx.recordings.record_start(SID, start(bucket))
    deliver(ctx, "40_", 0, T0 + 1000)
    stopped_at = T0 + 10 * MIN
    ctx.recordings.record_stop(SID, StopCall(206, 65, None, (), {"code": 65}, stopped_at))
    return stopped_at


# After a failover the recorder that took over (another uid) uploads its own bak0_ files.
TAKEOVER_FILE = f"bak0_{SID}_class1024__uid_s_57297__uid_e_audio.m3u8"


def takeover_uploaded(ctx: WorkerContext) -> None:
    """The uploaded (31) of the recorder that took over SID, naming TAKEOVER_FILE only."""
    body = varied(load_example("31_"), uid="999001", sequence=30, sendts=T0 + 10 * MIN,
                  notice_id="takeover-31")  # fmt: skip
    body["payload"]["details"]["fileList"] = [{"fileName": TAKEOVER_FILE, "trackType": "audio"}]
    ctx.callbacks.record(load_callback(body), json.dumps(body).encode(),
                         received_ms=T0 + 11 * MIN)  # fmt: skip


def open_kinds(ctx: WorkerContext) -> set[str]:
    return kinds_of(ctx, SID)


def kinds_of(ctx: WorkerContext, sid: str) -> set[str]:
    return {a.kind for a in ctx.alerts.for_session(sid) if a.state != "resolved"}


class TestBackupedUpload:
    def test_before_the_deadline_nothing_is_raised_and_a_check_is_scheduled(
        self,
        ctx: WorkerContext,
        s3_bucket: str,
    ):
        backuped_at = backuped_session(ctx, s3_bucket)

        decision = reconcile(ctx, SID, backuped_at + MIN)

        assert decision.state == "backuped"
        assert open_kinds(ctx) == set()
        due = backuped_at + 5 * MIN
        registry = ScheduledJobRegistry(queue=ctx.queue)  # type: ignore[no-untyped-call]  # rq leaves it unannotated
        assert reconcile_job_id(SID, due) in registry.get_job_ids()
        assert ctx.redis.zscore(keys.active_recordings(), SID) == due

    def test_files_missing_at_five_minutes_raise_a_critical_alert_saying_what_is_missing(
        self,
        ctx: WorkerContext,
        s3_server: S3Server,
        s3_bucket: str,
    ):
        backuped_at = backuped_session(ctx, s3_bucket)
        put_recording(s3_server, s3_bucket, PLAYLISTS[0])  # one of two arrived

        decision = reconcile(ctx, SID, backuped_at + 5 * MIN)

        assert decision.state == "backuped"
        (alert,) = ctx.alerts.for_session(SID)
        assert (alert.kind, alert.severity, alert.state) == ("backup_not_uploaded", "critical",
                                                             "open")  # fmt: skip
        assert alert.cname == "class1024"
        assert alert.evidence["missing"] == [f"recordings/{PLAYLISTS[1]}"]
        assert alert.evidence["files"] == PLAYLISTS
        assert "support" in alert.evidence["advice"]

    def test_the_alert_resolves_when_the_files_appear_and_the_session_is_verified(
        self,
        ctx: WorkerContext,
        s3_server: S3Server,
        s3_bucket: str,
    ):
        backuped_at = backuped_session(ctx, s3_bucket)
        reconcile(ctx, SID, backuped_at + 5 * MIN)
        for playlist in PLAYLISTS:  # Agora's backup reaches the bucket, renamed
            put_recording(s3_server, s3_bucket, playlist,
                          name=playlist.replace(".m3u8", "_1749551700000_0.m3u8"))  # fmt: skip

        decision = reconcile(ctx, SID, backuped_at + 10 * MIN)

        assert decision.state == "verified"
        (alert,) = ctx.alerts.for_session(SID)
        assert alert.state == "resolved"
        assert ctx.recordings.facts(SID).verified_ms == backuped_at + 10 * MIN
        assert ctx.redis.zscore(keys.active_recordings(), SID) is None

    def test_a_backuped_after_verification_is_checked_again_from_its_own_arrival(
        self, ctx: WorkerContext, s3_server: S3Server, s3_bucket: str
    ):
        # After a failover the recorder that took over reports its own backuped, with its
        # own bak0_ files; it came after the first recorder's files were verified.
        backuped_at = backuped_session(ctx, s3_bucket)
        for playlist in PLAYLISTS:
            put_recording(s3_server, s3_bucket, playlist)
        assert reconcile(ctx, SID, backuped_at + 5 * MIN).state == "verified"
        takeover = f"bak0_{SID}_class1024__uid_s_57297__uid_e_audio.m3u8"
        at = backuped_at + 6 * MIN
        body = varied(load_example("32_"), uid="999001", sequence=40, sendts=at,
                      notice_id="takeover-32")  # fmt: skip
        body["payload"]["details"]["fileList"] = [{"fileName": takeover, "trackType": "audio"}]
        stored = ctx.callbacks.record(load_callback(body), json.dumps(body).encode(),
                                      received_ms=at)  # fmt: skip

        follow_up_callback(ctx, SID, "takeover-32", stored.entry_id, at)
        before = reconcile(ctx, SID, at + 4 * MIN)
        missing = reconcile(ctx, SID, at + 5 * MIN)  # its files never came (it used to stay
        put_recording(s3_server, s3_bucket, takeover)  # "verified", silent)
        found = reconcile(ctx, SID, at + 10 * MIN)

        assert (before.state, open_kinds(ctx)) == ("backuped", set())
        assert missing.state == "backuped"
        (alert,) = ctx.alerts.for_session(SID)
        assert alert.kind == "backup_not_uploaded"
        assert alert.evidence["missing"] == [f"recordings/{takeover}"]
        assert found.state == "verified"
        assert open_kinds(ctx) == set()

    def test_without_storage_credentials_the_alert_says_why(
        self,
        ctx: WorkerContext,
        s3_bucket: str,
    ):
        ctx = replace(ctx, settings=replace(ctx.settings, storage_config_path=""))
        backuped_at = backuped_session(ctx, s3_bucket)

        reconcile(ctx, SID, backuped_at + 5 * MIN)

        (alert,) = ctx.alerts.for_session(SID)
        assert "STORAGE_CONFIG" in alert.evidence["reason"]
        # Nothing was found missing: the alert does not say the files are not there.
        assert "could not be confirmed in your storage" in alert.message
        assert "not in your storage" not in alert.message

    def test_an_unreadable_storage_config_raises_the_alert_with_the_reason(
        self, ctx: WorkerContext, s3_bucket: str, tmp_path: Path
    ):
        broken = tmp_path / "broken.json"
        broken.write_text('{"buckets": {')
        ctx = replace(ctx, settings=replace(ctx.settings, storage_config_path=str(broken)))
        backuped_at = backuped_session(ctx, s3_bucket)

        decision = reconcile(ctx, SID, backuped_at + 5 * MIN)  # it used to raise, every time

        assert decision.state == "backuped"
        (alert,) = ctx.alerts.for_session(SID)
        assert alert.kind == "backup_not_uploaded"
        assert alert.evidence["reason"].startswith("STORAGE_CONFIG is unusable: ")

    def test_a_silent_storage_endpoint_holds_the_check_only_for_the_configured_reads(
        self,
        ctx: WorkerContext,
        tmp_path: Path,
    ):
        # The kernel accepts connections into the backlog; nobody ever reads or replies.
        with socket.create_server(("127.0.0.1", 0)) as silent:
            path = tmp_path / "silent.json"
            path.write_text(json.dumps({"buckets": {"silent-bucket": {
                "access_key_id": "AKIAREADONLY", "secret_access_key": "read-key",
                "endpoint_url": f"http://127.0.0.1:{silent.getsockname()[1]}",
            }}}))  # fmt: skip
            settings = replace(
                ctx.settings,
                storage_config_path=str(path),
                storage_read_timeout=timedelta(seconds=0.2),
            )
            ctx = replace(ctx, settings=settings)
            backuped_at = backuped_session(ctx, "silent-bucket")
            started = time.monotonic()

            reconcile(ctx, SID, backuped_at + 5 * MIN)

            held_s = time.monotonic() - started
        (alert,) = ctx.alerts.for_session(SID)
        assert "ReadTimeoutError" in alert.evidence["reason"]
        # Three reads of 0.2 s, where the default's would have taken ~30 s.
        assert held_s < 10

    def test_a_stop_answering_backuped_starts_the_clock_at_the_stop(
        self,
        ctx: WorkerContext,
        s3_bucket: str,
    ):
        stopped_at = stopped_backuped(ctx, s3_bucket)

        reconcile(ctx, SID, stopped_at + MIN)
        assert open_kinds(ctx) == set()
        reconcile(ctx, SID, stopped_at + 5 * MIN)
        assert open_kinds(ctx) == {"backup_not_uploaded"}

    def test_an_uploaded_after_it_does_not_undo_backuped_and_every_file_is_looked_for(
        self,
        ctx: WorkerContext,
        s3_server: S3Server,
        s3_bucket: str,
    ):
        # After a failover the new recorder (another uid) uploads its own files cleanly; the
        # first recorder's went to Agora's backup and must still reach the bucket.
        backuped_at = backuped_session(ctx, s3_bucket)
        takeover = f"bak0_{SID}_class1024__uid_s_57297__uid_e_audio.m3u8"
        body = varied(load_example("31_"), uid="999001", sequence=30, sendts=backuped_at + MIN,
                      notice_id="takeover-31")  # fmt: skip
        body["payload"]["details"]["fileList"] = [{"fileName": takeover, "trackType": "audio"}]
        ctx.callbacks.record(load_callback(body), json.dumps(body).encode(),
                             received_ms=backuped_at + MIN)  # fmt: skip
        put_recording(s3_server, s3_bucket, takeover)

        decision = reconcile(ctx, SID, backuped_at + 5 * MIN)

        assert decision.state == "backuped"
        (alert,) = ctx.alerts.for_session(SID)
        assert alert.kind == "backup_not_uploaded"
        assert sorted(alert.evidence["missing"]) == sorted(f"recordings/{p}" for p in PLAYLISTS)
        assert f"recordings/{takeover}" in alert.evidence["checked"]

    def test_a_stop_answering_backuped_is_not_undone_by_a_later_uploaded(
        self,
        ctx: WorkerContext,
        s3_bucket: str,
    ):
        stopped_at = stopped_backuped(ctx, s3_bucket)
        deliver(ctx, "31_", 23, stopped_at + 1000)

        assert reconcile(ctx, SID, stopped_at + MIN).state == "backuped"
        reconcile(ctx, SID, stopped_at + 5 * MIN)
        assert open_kinds(ctx) == {"backup_not_uploaded"}


class TestOtherRules:
    def test_a_clean_upload_raises_nothing_and_ends_the_watch(
        self,
        ctx: WorkerContext,
        s3_bucket: str,
    ):
        ctx.recordings.record_start(SID, start(s3_bucket))
        for sequence, prefix in enumerate(["40_", "30_", "33_", "41_", "31_", "11_"]):
            deliver(ctx, prefix, sequence, T0 + (sequence + 1) * MIN)
        ctx.recordings.record_stop(SID, StopCall(200, None, "uploaded", (), {}, T0 + 7 * MIN))

        decision = reconcile(ctx, SID, T0 + 8 * MIN)

        assert decision.state == "uploaded"
        assert ctx.alerts.for_session(SID) == []
        assert ctx.redis.zscore(keys.active_recordings(), SID) is None
        assert ctx.redis.zscore(keys.recordings_by_state("uploaded"), SID) is not None

    def test_a_stop_206_alerts_after_five_minutes_and_resolves_on_a_late_upload(
        self,
        ctx: WorkerContext,
        s3_bucket: str,
    ):
        stopped_at = stopped_not_completed(ctx, s3_bucket)

        reconcile(ctx, SID, stopped_at + 4 * MIN)
        assert open_kinds(ctx) == set()
        reconcile(ctx, SID, stopped_at + 5 * MIN)
        assert open_kinds(ctx) == {"upload_status_unknown"}

        deliver(ctx, "31_", 23, stopped_at + 6 * MIN)
        reconcile(ctx, SID, stopped_at + 6 * MIN)
        assert open_kinds(ctx) == set()

    def test_an_upload_progress_at_10000_is_named_in_the_alert_but_does_not_clear_it(
        self,
        ctx: WorkerContext,
        s3_bucket: str,
    ):
        # Every file uploaded, but whether to the bucket or to Agora's backup nobody said.
        stopped_at = stopped_not_completed(ctx, s3_bucket)
        deliver(ctx, "33_", 30, stopped_at + MIN, progress=10000)

        reconcile(ctx, SID, stopped_at + 5 * MIN)

        (alert,) = ctx.alerts.for_session(SID)
        assert (alert.kind, alert.severity) == ("upload_status_unknown", "critical")
        assert alert.evidence["upload_progress"] == 10000
        assert "reached 10000" in alert.message

    def test_the_answer_to_a_retried_stop_settles_a_206_and_starts_the_backup_check(
        self,
        ctx: WorkerContext,
        s3_bucket: str,
    ):
        stopped_at = stopped_not_completed(ctx, s3_bucket)
        reconcile(ctx, SID, stopped_at + 5 * MIN)
        assert open_kinds(ctx) == {"upload_status_unknown"}

        # The app retried its stop (FACTS: 206 code 65 means retry) and forwards the answer.
        retried_at = stopped_at + 6 * MIN
        retried = StopCall(200, None, "backuped", tuple(PLAYLISTS), {}, retried_at)
        assert ctx.recordings.record_stop(SID, retried)
        assert not ctx.recordings.record_stop(SID, replace(retried, http_status=206, code=65))
        reconcile(ctx, SID, retried_at + MIN)
        assert open_kinds(ctx) == set()
        decision = reconcile(ctx, SID, retried_at + 5 * MIN)

        assert decision.state == "backuped"
        assert open_kinds(ctx) == {"backup_not_uploaded"}

    def test_a_start_without_recorder_events_alerts_at_two_minutes(
        self,
        ctx: WorkerContext,
        s3_bucket: str,
    ):
        ctx.recordings.record_start(SID, start(s3_bucket))

        reconcile(ctx, SID, T0 + 2 * MIN)

        assert open_kinds(ctx) == {"recorder_not_started"}
        deliver(ctx, "40_", 0, T0 + 3 * MIN)
        reconcile(ctx, SID, T0 + 3 * MIN)
        assert open_kinds(ctx) == set()

    def test_a_recorder_whose_start_events_were_lost_but_that_records_is_not_unstarted(
        self, ctx: WorkerContext, s3_bucket: str
    ):
        # 40 and 30 dropped after NCS's retries (FACTS §5.1); the first slice (42) and the
        # minute's progress (33) say the recorder runs. It used to alert at two minutes and,
        # with the session ended by Agora (no stop), never resolve.
        ctx.recordings.record_start(SID, start(s3_bucket))
        deliver(ctx, "42_", 2, T0 + 5000)
        deliver(ctx, "33_", 3, T0 + MIN)
        recording = reconcile(ctx, SID, T0 + 2 * MIN)
        deliver(ctx, "31_", 23, T0 + 9 * MIN)
        deliver(ctx, "11_", 24, T0 + 9 * MIN + 1000)
        ended = reconcile(ctx, SID, T0 + 10 * MIN)

        assert recording.state == "recording"
        assert ended.state == "exited_idle"
        assert ctx.alerts.for_session(SID) == []

    def test_an_idle_exit_without_stop_is_recorded_as_exited_idle(
        self,
        ctx: WorkerContext,
        s3_bucket: str,
    ):
        ctx.recordings.record_start(SID, start(s3_bucket))
        deliver(ctx, "40_", 0, T0 + 1000)
        deliver(ctx, "11_", 5, T0 + 5 * MIN)

        decision = reconcile(ctx, SID, T0 + 5 * MIN)

        assert decision.state == "exited_idle"
        assert ctx.recordings.facts(SID).state == "exited_idle"
        assert ctx.alerts.for_session(SID) == []

    def test_an_idle_exit_after_recording_whose_upload_never_came_alerts(
        self, ctx: WorkerContext, s3_bucket: str
    ):
        ctx.recordings.record_start(SID, start(s3_bucket))
        for prefix, sequence, minute in (
            ("40_", 0, 0),
            ("42_", 1, 0),
            ("33_", 2, 1),
            ("11_", 3, 5),
        ):
            deliver(ctx, prefix, sequence, T0 + 1000 + minute * MIN)

        waiting = reconcile(ctx, SID, T0 + 6 * MIN)
        reconcile(ctx, SID, T0 + 11 * MIN)  # 5 min after the exit, no uploaded or backuped
        raised = open_kinds(ctx)
        deliver(ctx, "31_", 4, T0 + 12 * MIN)  # a late one after all
        reconcile(ctx, SID, T0 + 12 * MIN)

        assert (waiting.state, waiting.next_due_ms) == ("exited_idle", T0 + 1000 + 10 * MIN)
        assert raised == {"upload_status_unknown"}
        assert open_kinds(ctx) == set()

    @pytest.mark.parametrize(
        ("http_status", "response"),
        [(404, {"code": 404, "reason": "failed to find worker"}),
         (400, {"code": 49, "reason": "invalid operation"})],
    )  # fmt: skip
    def test_a_stop_that_finds_the_task_ended_by_agora_is_an_idle_exit_in_either_order(
        self, ctx: WorkerContext, s3_bucket: str, http_status: int, response: dict[str, Any]
    ):
        # Agora ended it (maxIdleTime) and said so; the app's stop came after and found no
        # task (FACTS §6.3). It used to be "stopped", upload status unknown: a critical alert.
        exited_first, stopped_first = "exited-first", "stopped-first"
        for sid in (exited_first, stopped_first):
            ctx.recordings.record_start(sid, start(s3_bucket))
            deliver_to(ctx, sid, "40_", 0, T0 + 1000)
        stop = StopCall(http_status, response["code"], "unknown", (), response, T0 + 6 * MIN)
        deliver_to(ctx, exited_first, "11_", 5, T0 + 5 * MIN)
        ctx.recordings.record_stop(exited_first, stop)
        ctx.recordings.record_stop(stopped_first, stop)
        reconcile(ctx, stopped_first, T0 + 11 * MIN)  # no exit yet: unknown, alerted
        assert kinds_of(ctx, stopped_first) == {"upload_status_unknown"}
        deliver_to(ctx, stopped_first, "11_", 5, T0 + 5 * MIN, received_at=T0 + 12 * MIN)

        for sid in (exited_first, stopped_first):
            assert reconcile(ctx, sid, T0 + 12 * MIN).state == "exited_idle"
            assert kinds_of(ctx, sid) == set()

    def test_a_clean_upload_resolves_the_failover_whether_the_idle_exit_came_before_or_after(
        self, ctx: WorkerContext, s3_bucket: str
    ):
        # FACTS §2: uploaded (31) can arrive after session_exit (11). With the exit first,
        # the session was exited_idle when the upload came, and the failover stayed open.
        order = {"upload-first": ("31_", "11_"), "exit-first": ("11_", "31_")}
        for sid, prefixes in order.items():
            ctx.recordings.record_start(sid, start(s3_bucket))
            deliver_to(ctx, sid, "40_", 0, T0 + 1000)
            for prefix in ("12_", *prefixes):
                body = varied(load_example(prefix), sid=sid, notice_id=f"{sid}-{prefix}")
                stored = ctx.callbacks.record(load_callback(body), json.dumps(body).encode(),
                                              received_ms=T0 + 30 * MIN)  # fmt: skip
                follow_up_callback(ctx, sid, body["noticeId"], stored.entry_id, T0 + 30 * MIN)

        for sid in order:
            assert ctx.recordings.facts(sid).state == "exited_idle"
            assert kinds_of(ctx, sid) == set()

    def test_a_file_list_mismatch_resolves_when_a_later_upload_names_the_stop_s_files(
        self, ctx: WorkerContext, s3_bucket: str
    ):
        # After a failover the recorder that took over (another uid) uploads its own bak0_
        # files (FACTS §5.4), and the stop it answered lists them; the first recorder's
        # uploaded came first. Condition cleared, the alert stayed open.
        ctx.recordings.record_start(SID, start(s3_bucket))
        deliver(ctx, "40_", 0, T0 + 1000)
        deliver(ctx, "31_", 23, T0 + 9 * MIN)
        stop = StopCall(200, None, "uploaded", (TAKEOVER_FILE,), {}, T0 + 10 * MIN)
        ctx.recordings.record_stop(SID, stop)
        reconcile(ctx, SID, T0 + 10 * MIN)
        assert open_kinds(ctx) == {"file_list_mismatch"}
        takeover_uploaded(ctx)

        decision = reconcile(ctx, SID, T0 + 11 * MIN)

        assert decision.state == "uploaded"
        assert open_kinds(ctx) == set()

    def test_a_stop_listing_both_recorders_files_after_a_failover_matches_the_callbacks(
        self, ctx: WorkerContext, s3_bucket: str
    ):
        # Each recorder's uploaded names its own files (FACTS §5.4: bak0_ after a failover)
        # and the summary keeps the latest list only: a stop naming both was a mismatch.
        ctx.recordings.record_start(SID, start(s3_bucket))
        deliver(ctx, "40_", 0, T0 + 1000)
        deliver(ctx, "31_", 23, T0 + 9 * MIN)
        first = {f.file_name for f in ctx.callbacks.session(SID).files}  # type: ignore[union-attr]
        takeover_uploaded(ctx)
        both = (*sorted(first), TAKEOVER_FILE)
        ctx.recordings.record_stop(SID, StopCall(200, None, "uploaded", both, {}, T0 + 11 * MIN))

        assert reconcile(ctx, SID, T0 + 11 * MIN).state == "uploaded"
        assert open_kinds(ctx) == set()

    def test_a_failed_upload_alerts_whether_it_came_before_or_after_a_clean_one(
        self, ctx: WorkerContext, s3_bucket: str
    ):
        # After a failover the first recorder's uploaded may report a non-zero status and
        # the takeover's a normal one (FACTS §5.4). The latest decides the state, but the
        # failure must be raised in either arrival order: it was raised only when it came
        # first, while it was the latest seen.
        for sid, order in {"failed-first": (1, 0), "clean-first": (0, 1)}.items():
            ctx.recordings.record_start(sid, start(s3_bucket))
            deliver_to(ctx, sid, "40_", 0, T0 + 1000)
            for status in order:
                body = varied(load_example("31_"), sid=sid, notice_id=f"{sid}-31-{status}",
                              sequence=20 + status, sendts=T0 + (9 - status) * MIN)  # fmt: skip
                body["payload"]["details"]["status"] = status
                ctx.callbacks.record(load_callback(body), json.dumps(body).encode(),
                                     received_ms=T0 + 10 * MIN)  # fmt: skip
                reconcile(ctx, sid, T0 + 10 * MIN)

        for sid in ("failed-first", "clean-first"):
            assert ctx.recordings.facts(sid).state == "uploaded"  # the clean one is the latest
            assert kinds_of(ctx, sid) == {"upload_failed"}
            (alert,) = ctx.alerts.for_session(sid)
            assert alert.evidence["upload_failures"] == 1
            assert "1 upload(s) with a non-zero status" in alert.message


def test_the_callback_follow_up_job_raises_the_event_alert_and_reconciles(
    ctx: WorkerContext,
    s3_bucket: str,
):
    ctx.recordings.record_start(SID, start(s3_bucket))
    body = load_example("01_")
    result = ctx.callbacks.record(load_callback(body), json.dumps(body).encode(),
                                  received_ms=T0 + MIN)  # fmt: skip
    enqueue_callback(ctx.queue, SID, body["noticeId"], result.entry_id)

    SimpleWorker([ctx.queue], connection=ctx.redis, serializer=JSONSerializer).work(burst=True)

    kinds = {a.kind: a for a in ctx.alerts.for_session(SID)}
    assert kinds["recording_error"].evidence["errorCode"] == 47
    assert ctx.redis.zcard(keys.pending_handoffs()) == 0
    assert ctx.recordings.facts(SID).state in ("started", "recording")


class TestQueryPolling:
    """Rule 6: Agora drops a notification after 3 retries; polling query finds out."""

    @pytest.fixture
    def simulator(self) -> Iterator[SimulatorServer]:
        config = SimulatorConfig(
            app_id="app", customer_id="cid", customer_secret="csecret",
            # Its callbacks reach nobody: every notification of this recording is lost.
            callback_url=f"http://127.0.0.1:{free_port()}/agora/callback",
            callback_secret="ncs", time_scale=0.002,
        )  # fmt: skip
        server = SimulatorServer(CloudRecordingService(config)).start()
        yield server
        server.stop()

    @pytest.fixture
    def polling(self, ctx: WorkerContext, simulator: SimulatorServer) -> WorkerContext:
        settings = replace(
            ctx.settings, agora_api_base=simulator.url, agora_app_id="app",
            agora_customer_id="cid", agora_customer_secret="csecret",
        )  # fmt: skip
        return replace(ctx, settings=settings)

    def started(self, polling: WorkerContext, s3_bucket: str) -> tuple[AgoraClient, str, str]:
        agora = AgoraClient(polling.settings.agora_api_base, "app", "cid", "csecret")
        resource_id = agora.acquire("class1024", "527841")
        storage = {"storageConfig": {"vendor": 11, "region": 0, "bucket": s3_bucket}}
        sid = agora.start(resource_id, "individual", "class1024", "527841", storage)
        polling.recordings.record_start(sid, replace(start(s3_bucket), resource_id=resource_id))
        body = load_example("40_")
        body["payload"]["sid"] = body["sid"] = sid
        polling.callbacks.record(load_callback(body), json.dumps(body).encode(), received_ms=T0)
        return agora, resource_id, sid

    def test_a_running_session_is_polled_and_the_call_recorded(
        self, polling: WorkerContext, s3_bucket: str
    ):
        agora, _, sid = self.started(polling, s3_bucket)

        reconcile(polling, sid, T0 + MIN)

        facts = polling.recordings.facts(sid)
        assert facts.last_query_http_status == 200
        assert [c["endpoint"] for c in polling.recordings.calls(sid)][-1] == "query"
        assert polling.alerts.for_session(sid) == []
        agora.close()

    def test_a_task_agora_ended_without_telling_us_is_upload_unconfirmed(
        self, polling: WorkerContext, s3_bucket: str
    ):
        agora, resource_id, sid = self.started(polling, s3_bucket)
        agora.stop(resource_id, sid, "individual", "class1024", "527841")  # not forwarded

        # One 404 may be an HA migration (up to 90 s, its event maybe lost): asked again then.
        first = reconcile(polling, sid, T0 + MIN)
        assert polling.alerts.for_session(sid) == []
        assert first.deadline_ms == T0 + MIN + 90_000
        reconcile(polling, sid, T0 + MIN + 90_000)

        facts = polling.recordings.facts(sid)
        assert (facts.last_query_http_status, facts.task_gone_ms) == (404, T0 + MIN)
        (alert,) = polling.alerts.for_session(sid)
        assert (alert.kind, alert.severity) == ("upload_unconfirmed", "critical")
        agora.close()

    def test_404s_during_a_migration_whose_event_came_late_are_expected(
        self, polling: WorkerContext, s3_bucket: str
    ):
        agora, resource_id, sid = self.started(polling, s3_bucket)
        agora.stop(resource_id, sid, "individual", "class1024", "527841")
        reconcile(polling, sid, T0 + MIN)  # a 404, and no failover event yet
        polling.recordings.mark_failover(sid, T0 + MIN + 60_000)

        reconcile(polling, sid, T0 + MIN + 90_000)  # 90 s after the 404, 30 s after the event

        assert "upload_unconfirmed" not in kinds_of(polling, sid)
        reconcile(polling, sid, T0 + MIN + 150_000)
        assert "upload_unconfirmed" in kinds_of(polling, sid)
        agora.close()

    def test_an_earlier_failover_handled_late_does_not_shorten_the_grace(
        self, polling: WorkerContext, s3_bucket: str
    ):
        # Two failovers, their jobs run out of order (or RQ re-runs the first one's).
        agora, resource_id, sid = self.started(polling, s3_bucket)
        agora.stop(resource_id, sid, "individual", "class1024", "527841")
        reconcile(polling, sid, T0 + MIN)  # a 404
        polling.recordings.mark_failover(sid, T0 + MIN + 60_000)
        polling.recordings.mark_failover(sid, T0 + MIN - 30_000)

        assert polling.recordings.facts(sid).failover_ms == T0 + MIN + 60_000
        reconcile(polling, sid, T0 + MIN + 90_000)  # within 90 s of the later failover
        assert "upload_unconfirmed" not in kinds_of(polling, sid)
        agora.close()

    def test_a_task_running_again_clears_the_404s(self, polling: WorkerContext, s3_bucket: str):
        agora, _, sid = self.started(polling, s3_bucket)
        polling.recordings.record_query(sid, at_ms=T0, http_status=404, task_gone=True)

        reconcile(polling, sid, T0 + 90_000)  # the migration is over: query answers 200

        assert polling.recordings.facts(sid).task_gone_ms is None
        assert polling.alerts.for_session(sid) == []
        agora.close()

    def test_a_wrong_url_s_404_is_not_the_task_s_end(
        self, polling: WorkerContext, simulator: SimulatorServer, s3_bucket: str
    ):
        agora, _, sid = self.started(polling, s3_bucket)
        # Agora's gateway answers a wrong URL or app id: 404 "no Route matched".
        wrong_base = replace(polling.settings, agora_api_base=f"{simulator.url}/nowhere")
        misrouted = replace(polling, settings=wrong_base)

        for minutes in (1, 3, 5):
            reconcile(misrouted, sid, T0 + minutes * MIN)

        facts = misrouted.recordings.facts(sid)
        assert (facts.last_query_http_status, facts.task_gone_ms) == (404, None)
        assert "upload_unconfirmed" not in kinds_of(misrouted, sid)  # (silent: stale_session)
        agora.close()


def test_alerts_expire_with_the_retention(ctx: WorkerContext, s3_bucket: str):
    ctx.recordings.record_start(SID, start(s3_bucket))

    reconcile(ctx, SID, T0 + 2 * MIN)

    (alert,) = ctx.alerts.for_session(SID)
    retention_s = ctx.settings.retention.total_seconds()
    assert 0 < ctx.redis.ttl(keys.alert(alert.id)) <= retention_s
    assert 0 < ctx.redis.ttl(keys.session_alerts(SID)) <= retention_s


def test_every_write_of_an_alert_keeps_its_session_s_list_as_long_as_the_alert(
    ctx: WorkerContext,
):
    # A session's list of alert kinds expiring before its alert (it got its TTL only when
    # the alert opened) hid an open alert from the session's pages.
    alerts = ctx.alerts
    alert, _ = alerts.raise_alert(sid=SID, cname="class1024", kind="stale_session",
                                  message="silent", evidence={}, now_ms=T0)  # fmt: skip
    writes: list[Callable[[], object]] = [
        lambda: alerts.raise_alert(sid=SID, cname="class1024", kind="stale_session",
                                   message="still silent", evidence={}, now_ms=T0 + MIN),
        lambda: alerts.acknowledge(alert.id, now_ms=T0 + 2 * MIN),
        lambda: alerts.resolve(SID, "stale_session", now_ms=T0 + 3 * MIN, note="cleared"),
    ]  # fmt: skip
    for write in writes:
        ctx.redis.expire(keys.session_alerts(SID), 10)  # as if it opened long ago
        write()
        assert ctx.redis.ttl(keys.session_alerts(SID)) >= ctx.redis.ttl(keys.alert(alert.id)) > 10


def test_one_broken_session_does_not_stop_the_sweep(ctx: WorkerContext, s3_bucket: str):
    ctx.recordings.record_start(SID, start(s3_bucket))
    ctx.recordings.record_start("broken-session", start(s3_bucket))
    ctx.redis.hset(keys.recording("broken-session"), "start_request", b"{not json")
    ctx.recordings.schedule("broken-session", 0)  # due first
    ctx.recordings.schedule(SID, 1)
    ctx.queue.enqueue_call("workers.reconcile.sweep_active_sessions")

    SimpleWorker([ctx.queue], connection=ctx.redis, serializer=JSONSerializer).work(burst=True)

    assert ctx.recordings.facts(SID).state in ("started", "recording")
    assert ctx.queue.failed_job_registry.count == 1
    assert (ctx.redis.zscore(keys.active_recordings(), "broken-session") or 0) > 1


def test_a_callback_whose_hand_off_was_lost_is_followed_up_by_the_sweep(
    ctx: WorkerContext, s3_bucket: str
):
    ctx.recordings.record_start(SID, start(s3_bucket))
    body = load_example("01_")
    stored_at = now_ms() - 3 * MIN  # stored, answered 503, and Agora gave up
    ctx.callbacks.record(load_callback(body), json.dumps(body).encode(), received_ms=stored_at)
    ctx.queue.enqueue_call("workers.reconcile.sweep_active_sessions")

    SimpleWorker([ctx.queue], connection=ctx.redis, serializer=JSONSerializer).work(burst=True)

    assert "recording_error" in {a.kind for a in ctx.alerts.for_session(SID)}
    assert ctx.redis.zcard(keys.pending_handoffs()) == 0


def deliveries_queued(ctx: WorkerContext, alert_id: str) -> list[str]:
    return sorted(j for j in ctx.queue.job_ids if j.startswith(f"deliver-{alert_id}-"))


def test_a_transition_whose_worker_died_before_announcing_it_is_announced_next_time(
    ctx: WorkerContext, s3_bucket: str
):
    backuped_at = backuped_session(ctx, s3_bucket)
    # The worker wrote the alert, then died before queueing its deliveries.
    alert, transition = ctx.alerts.raise_alert(
        sid=SID, cname="class1024", kind="backup_not_uploaded", message="files missing",
        evidence={}, now_ms=backuped_at + 5 * MIN,
    )  # fmt: skip
    assert transition == "raised"
    assert deliveries_queued(ctx, alert.id) == []

    reconcile(ctx, SID, backuped_at + 5 * MIN + 1)

    queued = deliveries_queued(ctx, alert.id)
    assert queued
    assert all("-raised-" in job for job in queued)
    found = ctx.alerts.get(alert.id)
    assert found is not None
    assert found.unannounced == ()
    reconcile(ctx, SID, backuped_at + 5 * MIN + 2)
    assert deliveries_queued(ctx, alert.id) == queued


def test_a_re_run_follow_up_never_opens_a_second_episode_of_its_alert(
    ctx: WorkerContext, s3_bucket: str
):
    ctx.recordings.record_start(SID, start(s3_bucket))
    stored = {}
    for prefix, at in (("12_", T0 + MIN), ("31_", T0 + 2 * MIN)):
        body = load_example(prefix)
        stored[prefix] = (body["noticeId"], ctx.callbacks.record(
            load_callback(body), json.dumps(body).encode(), received_ms=at).entry_id)  # fmt: skip
    failover_notice, failover_entry = stored["12_"]
    follow_up_callback(ctx, SID, failover_notice, failover_entry, T0 + MIN)
    follow_up_callback(ctx, SID, *stored["31_"], T0 + 2 * MIN)
    (resolved,) = [a for a in ctx.alerts.for_session(SID) if a.kind == "failover"]
    assert resolved.state == "resolved"

    # RQ runs the failover's job again (its worker died after the last step).
    follow_up_callback(ctx, SID, failover_notice, failover_entry, T0 + 3 * MIN)

    (again,) = [a for a in ctx.alerts.for_session(SID) if a.kind == "failover"]
    assert (again.state, again.raised_ms) == ("resolved", resolved.raised_ms)


def test_a_transition_left_unannounced_is_announced_even_if_the_alert_resolves_meanwhile(
    ctx: WorkerContext, s3_server: S3Server, s3_bucket: str
):
    backuped_at = backuped_session(ctx, s3_bucket)
    alert, _ = ctx.alerts.raise_alert(
        sid=SID, cname="class1024", kind="backup_not_uploaded", message="files missing",
        evidence={}, now_ms=backuped_at + 5 * MIN,
    )  # fmt: skip
    for playlist in PLAYLISTS:
        put_recording(s3_server, s3_bucket, playlist)

    reconcile(ctx, SID, backuped_at + 6 * MIN)

    found = ctx.alerts.get(alert.id)
    assert found is not None
    assert (found.state, found.unannounced) == ("resolved", ())
    queued = deliveries_queued(ctx, alert.id)
    assert any("-raised-" in job for job in queued)
    assert any("-resolved-" in job for job in queued)
