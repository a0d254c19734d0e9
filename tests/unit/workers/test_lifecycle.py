"""The reconciliation rules as pure functions: facts and a clock in, a decision out."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from webhook.events import RecordedFile
from webhook.recordings import RecordingFacts, StartCall, StopCall
from webhook.store import SessionSummary
from workers.lifecycle import (
    Deadlines,
    Verification,
    alerts_for_event,
    assess,
    derive_state,
    needs_storage_check,
)

SID = "38f8e3cfdc474cd56fc1ceba380d7e1a"
T0 = 1_749_549_600_000
MIN = 60_000
DEADLINES = Deadlines(
    backup=timedelta(minutes=5),
    upload_status=timedelta(minutes=5),
    recorder_start=timedelta(minutes=2),
    stale_margin=timedelta(minutes=3),
    backup_recheck=timedelta(minutes=5),
    poll=timedelta(minutes=2),
)
FILES = (RecordedFile("a.m3u8"), RecordedFile("b.m3u8"))


def start(**changes: Any) -> StartCall:
    base = StartCall(
        resource_id="rid",
        cname="class1024",
        uid="527841",
        mode="individual",
        client_request={"recordingConfig": {"maxIdleTime": 30},
                        "storageConfig": {"vendor": 11, "bucket": "b"}},
        started_ms=T0,
    )  # fmt: skip
    return replace(base, **changes)


def stop(**changes: Any) -> StopCall:
    base = StopCall(
        http_status=200,
        code=None,
        uploading_status="uploaded",
        file_names=("a.m3u8", "b.m3u8"),
        response={},
        stopped_ms=T0 + 10 * MIN,
    )
    return replace(base, **changes)


def summary(counts: dict[int, int] | None = None, **changes: Any) -> SessionSummary:
    base = SessionSummary(
        sid=SID, cname="class1024", uid="527841", first_seen_ms=T0 + 1000,
        last_seen_ms=T0 + 9 * MIN, first_event_ms=T0 + 1000, last_event_ms=T0 + 9 * MIN,
        last_event_type=33, events=10, counts=counts or {40: 1, 30: 1, 33: 8}, invalid=0,
        unknown_type=0, duplicates=0, redundant=0, upload_progress=None, upload_status=None,
        upload_ok=None, upload_failures=0, files=(), max_sequence=9, sequence_gaps=0,
        sequence_beyond_limit=0,
    )  # fmt: skip
    return replace(base, **changes)


def facts(**changes: Any) -> RecordingFacts:
    return replace(RecordingFacts(sid=SID, start=start()), **changes)


def kinds(specs: Any) -> set[str]:
    return {s.kind for s in specs}


class TestState:
    @pytest.mark.parametrize(
        ("known", "callbacks", "state"),
        [
            (facts(), None, "started"),
            (facts(), summary(), "recording"),
            (facts(stop=stop(uploading_status=None, http_status=206, code=65)), summary(),
             "stopped"),
            (facts(stop=stop()), summary(), "uploaded"),
            (facts(), summary(upload_status="uploaded", upload_ok=True), "uploaded"),
            (facts(), summary(upload_status="backuped", upload_ok=True), "backuped"),
            (facts(), summary(counts={40: 1, 11: 1}), "exited_idle"),
            (facts(), summary(counts={40: 1, 31: 1, 11: 1}, upload_status="uploaded",
                              upload_ok=True), "exited_idle"),
            (facts(stop=stop()), summary(counts={40: 1, 31: 1, 11: 1},
                                         upload_status="uploaded", upload_ok=True), "uploaded"),
            (RecordingFacts(sid=SID), summary(counts={40: 1, 11: 1}), "exited"),
            (facts(stop=stop(http_status=206, code=435, uploading_status=None)), None,
             "nothing_recorded"),
            (facts(), summary(upload_status="uploaded", upload_ok=False), "failed"),
            (RecordingFacts(sid=SID), None, "unknown"),
        ],
    )  # fmt: skip
    def test_the_state_follows_from_the_facts(self, known, callbacks, state):
        assert derive_state(known, callbacks, verified=False) == state

    def test_a_verified_backup_is_verified(self):
        backuped = summary(upload_status="backuped", upload_ok=True)
        assert derive_state(facts(), backuped, verified=True) == "verified"


class TestBackupRule:
    backuped = summary(upload_status="backuped", upload_ok=True, files=FILES)

    def test_before_the_deadline_it_waits_until_the_deadline(self):
        known = facts(backuped_ms=T0 + 10 * MIN)

        decision = assess(known, self.backuped, DEADLINES, T0 + 12 * MIN)

        assert decision.raise_alerts == ()
        assert decision.next_due_ms == T0 + 15 * MIN
        assert not needs_storage_check(known, self.backuped, DEADLINES, T0 + 12 * MIN)

    def test_at_the_deadline_missing_files_raise_a_critical_alert_with_evidence(self):
        known = facts(backuped_ms=T0 + 10 * MIN)
        now = T0 + 15 * MIN
        check = Verification(False, checked=("a.m3u8",), missing=("b.m3u8",))

        assert needs_storage_check(known, self.backuped, DEADLINES, now)
        decision = assess(known, self.backuped, DEADLINES, now, check)

        (alert,) = [a for a in decision.raise_alerts if a.kind == "backup_not_uploaded"]
        assert alert.evidence["missing"] == ["b.m3u8"]
        assert alert.evidence["files"] == ["a.m3u8", "b.m3u8"]
        assert "support" in alert.evidence["advice"]
        assert decision.next_due_ms == now + 5 * MIN  # looks again after the alert

    def test_a_backup_that_never_comes_is_looked_for_less_and_less_often(self):
        known = facts(backuped_ms=T0 + 10 * MIN)
        now = T0 + 60 * MIN

        delays = [
            (assess(replace(known, storage_checks=n), self.backuped, DEADLINES, now,
                   Verification(False)).next_due_ms or 0) - now
            for n in (1, 2, 3, 10)
        ]  # fmt: skip

        assert delays == [5 * MIN, 10 * MIN, 20 * MIN, 60 * MIN]

    def test_files_found_later_resolve_the_alert_and_end_the_watch(self):
        known = facts(backuped_ms=T0 + 10 * MIN)

        decision = assess(known, self.backuped, DEADLINES, T0 + 21 * MIN, Verification(True))

        assert decision.state == "verified"
        assert "backup_not_uploaded" in decision.resolve_kinds
        assert decision.next_due_ms is None

    def test_a_backuped_stop_answer_starts_the_clock_too(self):
        known = facts(stop=stop(uploading_status="backuped"), backuped_ms=T0 + 10 * MIN)

        decision = assess(known, summary(), DEADLINES, T0 + 16 * MIN, Verification(False))

        assert "backup_not_uploaded" in kinds(decision.raise_alerts)


class TestStopRules:
    def test_stop_206_without_an_upload_event_alerts_after_the_deadline(self):
        known = facts(stop=stop(http_status=206, code=65, uploading_status=None))

        early = assess(known, summary(), DEADLINES, T0 + 12 * MIN)
        late = assess(known, summary(), DEADLINES, T0 + 15 * MIN)

        assert "upload_status_unknown" not in kinds(early.raise_alerts)
        assert early.next_due_ms == T0 + 15 * MIN
        assert "upload_status_unknown" in kinds(late.raise_alerts)

    def test_an_upload_event_after_a_206_resolves_it(self):
        known = facts(stop=stop(http_status=206, code=65, uploading_status=None))
        uploaded = summary(upload_status="uploaded", upload_ok=True)

        decision = assess(known, uploaded, DEADLINES, T0 + 20 * MIN)

        assert "upload_status_unknown" in decision.resolve_kinds

    def test_a_wrong_route_s_404_on_stop_is_no_sign_the_task_had_ended(self):
        route = {"message": "no Route matched with those values"}
        known = facts(stop=stop(http_status=404, code=None, uploading_status="unknown",
                                file_names=(), response=route))  # fmt: skip

        decision = assess(known, summary(counts={40: 1, 11: 1}), DEADLINES, T0 + 15 * MIN)

        assert decision.state == "stopped"
        assert "upload_status_unknown" in kinds(decision.raise_alerts)

    def test_nothing_recorded_is_its_own_alert_and_final(self):
        known = facts(stop=stop(http_status=206, code=435, uploading_status=None))

        decision = assess(known, None, DEADLINES, T0 + 11 * MIN)

        assert kinds(decision.raise_alerts) == {"nothing_recorded", "recorder_not_started"} or (
            "nothing_recorded" in kinds(decision.raise_alerts)
        )
        assert decision.state == "nothing_recorded"

    def test_a_stop_file_list_the_callbacks_do_not_know_is_a_mismatch(self):
        known = facts(stop=stop(file_names=("a.m3u8", "c.m3u8")))
        uploaded = summary(upload_status="uploaded", upload_ok=True, files=FILES)

        decision = assess(known, uploaded, DEADLINES, T0 + 11 * MIN)

        (alert,) = [a for a in decision.raise_alerts if a.kind == "file_list_mismatch"]
        assert alert.evidence["only_in_stop"] == ["c.m3u8"]


class TestStartAndSilence:
    def test_no_recorder_event_two_minutes_after_start_alerts(self):
        assert assess(facts(), None, DEADLINES, T0 + MIN).next_due_ms == T0 + 2 * MIN
        decision = assess(facts(), None, DEADLINES, T0 + 2 * MIN)
        assert "recorder_not_started" in kinds(decision.raise_alerts)

    def test_the_recorder_starting_resolves_it(self):
        decision = assess(facts(), summary(), DEADLINES, T0 + 3 * MIN)
        assert "recorder_not_started" in decision.resolve_kinds

    def test_an_active_session_silent_past_max_idle_and_margin_is_stale(self):
        quiet = summary(last_seen_ms=T0 + MIN)
        deadline = T0 + MIN + 30_000 + 3 * MIN

        assert assess(facts(), quiet, DEADLINES, deadline - 1).next_due_ms == deadline
        assert "stale_session" in kinds(assess(facts(), quiet, DEADLINES, deadline).raise_alerts)

    def test_an_idle_exit_without_stop_is_a_state_not_an_alert(self):
        decision = assess(facts(), summary(counts={40: 1, 11: 1}), DEADLINES, T0 + 30 * MIN)

        assert decision.state == "exited_idle"
        assert decision.raise_alerts == ()
        assert decision.next_due_ms is None

    def test_an_idle_exit_after_recording_waits_for_its_upload_then_alerts(self):
        # Agora exits "after ... files were uploaded" (FACTS §3), so an uploaded or a
        # backuped must follow; NCS may drop it (§5.1). The session was final, unwatched.
        recorded = summary(counts={40: 1, 42: 1, 33: 8, 11: 1}, last_seen_ms=T0 + 9 * MIN)
        deadline = T0 + 9 * MIN + 5 * MIN

        waiting = assess(facts(), recorded, DEADLINES, deadline - 1)
        alerted = assess(facts(), recorded, DEADLINES, deadline)
        uploaded = replace(recorded, counts={**recorded.counts, 31: 1}, upload_status="uploaded",
                           upload_ok=True)  # fmt: skip
        settled = assess(facts(), uploaded, DEADLINES, deadline)

        assert (waiting.state, waiting.raise_alerts, waiting.next_due_ms) == (
            "exited_idle",
            (),
            deadline,
        )
        assert kinds(alerted.raise_alerts) == {"upload_status_unknown"}
        assert "upload notification may be lost" in alerted.raise_alerts[0].message
        assert settled.raise_alerts == ()
        assert "upload_status_unknown" in settled.resolve_kinds


class TestEventAlerts:
    def test_an_uploader_error_carries_agoras_code_and_message(self):
        details = {"module": 1, "errorLevel": 4, "errorCode": 47, "stat": 1,
                   "errorMsg": "upload file failed"}  # fmt: skip

        (alert,) = alerts_for_event(1, details, SID)

        assert alert.kind == "recording_error"
        assert alert.evidence["errorCode"] == 47
        assert "upload file failed" in alert.message

    @pytest.mark.parametrize(
        ("details", "severity"),
        [({"module": 0, "errorLevel": 1}, "info"), ({"module": 2, "errorLevel": 2}, "warning"),
         ({"module": 0, "errorLevel": 3}, "critical"), ({"module": 6, "errorLevel": 5}, "critical"),
         ({"module": 1, "errorLevel": 1}, "critical"), ({"module": 0}, "critical")],
        ids=["debug", "minor", "medium", "fatal", "the uploader's, any level", "no level"],
    )  # fmt: skip
    def test_an_error_is_as_loud_as_agora_s_level_says(
        self, details: dict[str, int], severity: str
    ):
        # FACTS §3: errorLevel 1 debug, 2 minor, 3 medium, 4 major, 5 fatal. Every one was
        # critical, so a debug message paged the on-call engineer.
        (alert,) = alerts_for_event(1, {**details, "errorCode": 10, "stat": 0}, SID)
        assert alert.severity == severity

    def test_a_slice_sent_to_backup_warns(self):
        (alert,) = alerts_for_event(2, {"module": 1, "warnCode": 32}, SID)
        assert alert.kind == "upload_warning"

    def test_a_slice_re_uploaded_to_your_storage_does_not(self):
        assert alerts_for_event(2, {"module": 1, "warnCode": 31}, SID) == ()

    def test_numbers_sent_as_strings_are_read_as_the_callback_was_validated(self):
        # The schemas take the string of an integer (Agora's legacy numbers), so such a
        # callback is valid, and its rules must read it alike: the warning was missed and
        # a web recording's normal end raised an error.
        (alert,) = alerts_for_event(2, {"module": "1", "warnCode": "32"}, SID)
        assert alert.kind == "upload_warning"
        assert alerts_for_event(71, {"code": "0", "message": "ok"}, SID) == ()
        assert alerts_for_event(71, {"code": True, "message": "ok"}, SID) != ()  # not a number

    def test_an_abnormal_session_exit_is_an_error_and_a_normal_one_is_not(self):
        # FACTS §3, event 11: exitStatus 0 normal, 1 abnormal (bad parameters, say).
        (alert,) = alerts_for_event(11, {"exitStatus": 1}, SID)
        assert (alert.kind, alert.evidence) == ("recording_error", {"exitStatus": 1})
        assert alerts_for_event(11, {"exitStatus": 0}, SID) == ()
        assert alerts_for_event(11, {}, SID) == ()  # flagged, says nothing

    def test_failover_is_a_warning_that_explains_the_404s(self):
        (alert,) = alerts_for_event(12, {"newUid": 3957220413}, SID)
        assert alert.kind == "failover"
        assert "404" in alert.message

    def test_download_failed_alerts(self):
        (alert,) = alerts_for_event(90, {"bucket": "b", "vendor": 1}, SID)
        assert alert.kind == "download_failed"

    @pytest.mark.parametrize("key", ["fileName", "filename"])
    def test_download_failed_names_the_files_in_either_spelling(self, key: str):
        (alert,) = alerts_for_event(90, {"bucket": "b", key: "a.m3u8;a_1.ts"}, SID)
        assert alert.evidence["fileName"] == "a.m3u8;a_1.ts"

    def test_a_progress_tick_raises_nothing(self):
        assert alerts_for_event(33, {"progress": 10}, SID) == ()


class TestScheduling:
    def test_a_rule_deadline_is_a_fixed_time_and_a_poll_is_not(self):
        decision = assess(facts(), None, DEADLINES, T0 + MIN)
        assert decision.deadline_ms == T0 + 2 * MIN  # recorder start deadline

        polled = assess(facts(), summary(), DEADLINES, T0 + 3 * MIN)
        assert polled.deadline_ms is None or polled.deadline_ms > T0 + 3 * MIN
        assert polled.next_due_ms is not None

    def test_nothing_is_watched_longer_than_the_retention(self):
        old = assess(facts(), summary(), DEADLINES, T0 + 31 * 24 * 60 * MIN)

        assert old.next_due_ms is None
        assert old.deadline_ms is None
