"""The reconciliation rules, as pure functions of what we know and the time.

Nothing here does I/O: reconcile.py loads the facts, asks assess(), then applies the
answer (state, alerts to raise and resolve, when to look again). Every input is a set of
facts, never an order of arrival, so the same facts always give the same answer.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from webhook.alerts import Severity
from webhook.events import EventType
from webhook.recordings import FINAL_STATES, RecordingFacts, State
from webhook.schemas import whole_number
from webhook.store import SessionSummary

START_EVENTS = (EventType.RECORDER_STARTED, EventType.UPLOADER_STARTED,
                EventType.WEB_RECORDER_STARTED)  # fmt: skip
# Events only a recorder that did start sends (FACTS §3: the first slice, stream states,
# progress every minute after recording starts, the first M3U8, files): each says it
# started as surely as its start events, which NCS may drop after 3 retries or send late
# (§5.1, §5.2). Not an exit, a leave, an error or a web stop: they come from a recorder
# that failed to start too (exitStatus 1, leaveCode 0, start_engine_failed).
RUNNING_EVENTS = (*START_EVENTS, EventType.CLOUD_RECORDING_FILE_INFOS, EventType.UPLOADED,
                  EventType.BACKUPED, EventType.UPLOADING_PROGRESS,
                  EventType.RECORDER_SLICE_START, EventType.RECORDER_AUDIO_STREAM_STATE_CHANGED,
                  EventType.RECORDER_VIDEO_STREAM_STATE_CHANGED,
                  EventType.RECORDER_SNAPSHOT_FILE)  # fmt: skip
# Problems Agora had on the way that a complete, clean upload makes moot.
ERROR_KINDS_RESOLVED_BY_A_CLEAN_UPLOAD = ("failover", "upload_warning", "recording_error")
CONTACT_SUPPORT = (
    "Agora reports no event when a backup reaches your bucket. If the files do not appear, "
    "contact Agora support (support@agora.io) with the sid and the file list."
)


@dataclass(frozen=True)
class Deadlines:
    backup: timedelta
    upload_status: timedelta
    recorder_start: timedelta
    stale_margin: timedelta
    backup_recheck: timedelta
    poll: timedelta
    # Stop watching a session this long after it started (the retention period).
    give_up: timedelta = timedelta(days=30)
    # How long query's 404s may be an HA migration under way rather than the task's end.
    migration: timedelta = timedelta(seconds=90)


@dataclass(frozen=True)
class Verification:
    """What the storage check found (see workers.storage)."""

    verified: bool
    checked: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    reason: str | None = None


@dataclass(frozen=True)
class AlertSpec:
    kind: str
    message: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    # None: the kind's default (webhook.alerts.KINDS).
    severity: Severity | None = None


@dataclass(frozen=True)
class Assessment:
    state: State
    raise_alerts: tuple[AlertSpec, ...] = ()
    resolve_kinds: tuple[str, ...] = ()
    # When reconciliation should look again (the sweep's schedule); None: never again.
    next_due_ms: int | None = None
    # The next rule deadline, a fixed time whatever run computes it, so a precise RQ check
    # can be scheduled there once (periodic looks are the sweep's).
    deadline_ms: int | None = None


def _ms(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)


def upload_status(facts: RecordingFacts, summary: SessionSummary | None) -> str | None:
    """backuped once anything said so, else uploaded from the callbacks or the stop answer.

    Backuped is sticky (FACTS §10.5: the clock starts at the first 32 or stop answer
    saying so): an uploaded (31) sent after it, by the recorder that took over after a
    failover say, names its own files only, and the backed-up ones must still reach the
    bucket."""
    if facts.backuped_ms is not None or _reported_backuped(facts, summary):
        return "backuped"
    if summary is not None and summary.upload_status:
        return summary.upload_status
    if facts.stop is not None and facts.stop.uploading_status in ("uploaded", "backuped"):
        return facts.stop.uploading_status
    return None


def _reported_backuped(facts: RecordingFacts, summary: SessionSummary | None) -> bool:
    if summary is not None and summary.counts.get(EventType.BACKUPED, 0) > 0:
        return True
    return facts.stop is not None and facts.stop.uploading_status == "backuped"


def has_started(summary: SessionSummary | None) -> bool:
    return summary is not None and any(summary.counts.get(t, 0) for t in RUNNING_EVENTS)


# Events that say files were made, so an upload status must follow (FACTS §3: the first
# slice, progress every minute while recording, the first M3U8 uploaded).
RECORDED_EVENTS = (EventType.RECORDER_SLICE_START, EventType.UPLOADING_PROGRESS,
                   EventType.CLOUD_RECORDING_FILE_INFOS)  # fmt: skip


def has_recorded(summary: SessionSummary | None) -> bool:
    return summary is not None and any(summary.counts.get(t, 0) for t in RECORDED_EVENTS)


def has_ended_by_itself(facts: RecordingFacts, summary: SessionSummary | None) -> bool:
    """Agora ended the session (session_exit) before any stop of the app's reached it: no
    stop, or one that found no task (404, 400 code 49: FACTS §6.3, §10.7 "already done")."""
    exited = summary is not None and summary.counts.get(EventType.SESSION_EXIT, 0) > 0
    return exited and (facts.stop is None or facts.stop.found_no_task)


def file_names(facts: RecordingFacts, summary: SessionSummary | None) -> tuple[str, ...]:
    """The files Agora says it wrote: the callbacks' list, else the stop answer's."""
    if summary is not None and summary.files:
        return tuple(f.file_name for f in summary.files)
    return facts.stop.file_names if facts.stop is not None else ()


def derive_state(facts: RecordingFacts, summary: SessionSummary | None, *, verified: bool) -> State:
    """The lifecycle state the facts imply, whatever order they arrived in."""
    status = upload_status(facts, summary)
    ended_by_agora = has_ended_by_itself(facts, summary)
    # The app never stopped it: Agora ended it (maxIdleTime), whatever was uploaded.
    idle_exit = ended_by_agora and facts.start is not None
    if summary is not None and summary.upload_ok is False:
        return "failed"
    if status == "backuped" and not verified:
        return "backuped"
    if status in ("uploaded", "backuped"):
        if idle_exit:
            return "exited_idle"
        return "verified" if status == "backuped" else "uploaded"
    if facts.stop is not None and facts.stop.nothing_recorded:
        return "nothing_recorded"
    if ended_by_agora:
        return "exited_idle" if facts.start is not None else "exited"
    if facts.stop is not None:
        return "stopped"
    if has_started(summary):
        return "recording"
    if facts.start is not None:
        return "started"
    return "unknown"


# uploading_progress when everything recorded has been uploaded (FACTS §3, event 33).
UPLOAD_COMPLETE = 10000

MAX_RECHECK = timedelta(hours=1)


def recheck_delay_ms(deadlines: Deadlines, checks_done: int) -> int:
    """After a failed storage check: the recheck interval, doubling with every check up to
    an hour, so a backup that never arrives is not looked for every few minutes for the
    whole retention period."""
    doubled = deadlines.backup_recheck * (2 ** max(0, min(checks_done - 1, 16)))
    return _ms(min(doubled, max(MAX_RECHECK, deadlines.backup_recheck)))


def needs_query(
    facts: RecordingFacts, summary: SessionSummary | None, deadlines: Deadlines, now_ms: int
) -> bool:
    """Time to ask Agora: an active session not asked for a poll interval, or sooner when
    the callbacks show a sequence gap (Agora recommends polling about every 2 minutes)."""
    if facts.start is None:
        return False
    if derive_state(facts, summary, verified=False) not in ("started", "recording"):
        return False
    if facts.last_query_ms is None:
        return True
    confirm_at = gone_confirmed_at(facts, deadlines)
    if confirm_at is not None and facts.last_query_ms < confirm_at <= now_ms:
        return True  # ask again once a migration would be over, whatever the interval
    interval = _ms(deadlines.poll)
    if summary is not None and summary.sequence_gaps > 0:
        interval = min(interval, 10_000)
    return now_ms - facts.last_query_ms >= interval


def gone_confirmed_at(facts: RecordingFacts, deadlines: Deadlines) -> int | None:
    """When a 404 "failed to find worker" still answered means the task has ended: a
    migration's length after the first of those 404s in a row, or after the failover event
    if that came later (FACTS §5.4: a migration answers 404 for up to 90 s, and its event
    may come late or never). None while query has not said the task is gone."""
    if facts.task_gone_ms is None:
        return None
    return max(facts.task_gone_ms, facts.failover_ms or 0) + _ms(deadlines.migration)


def needs_storage_check(
    facts: RecordingFacts, summary: SessionSummary | None, deadlines: Deadlines, now_ms: int
) -> bool:
    """Time to look in the customer's bucket: backuped, unverified, deadline passed."""
    if upload_status(facts, summary) != "backuped" or facts.verified_ms is not None:
        return False
    return facts.backuped_ms is not None and now_ms >= facts.backuped_ms + _ms(deadlines.backup)


def stop_names_unlisted_files(facts: RecordingFacts, summary: SessionSummary | None) -> bool:
    """The stop's file list names files the latest upload callback's list lacks. The
    summary keeps only that list: the earlier callbacks' lists (another recorder's, after a
    failover) may hold them, which assess() is then told (named_earlier)."""
    if facts.stop is None or summary is None or not summary.files:
        return False
    return not set(facts.stop.file_names) <= {f.file_name for f in summary.files}


def assess(
    facts: RecordingFacts,
    summary: SessionSummary | None,
    deadlines: Deadlines,
    now_ms: int,
    verification: Verification | None = None,
    named_earlier: Collection[str] = (),
) -> Assessment:
    """Apply every rule; the caller has run the storage check when needs_storage_check(),
    and passes the files earlier upload callbacks named when stop_names_unlisted_files()."""
    verified = facts.verified_ms is not None or bool(verification and verification.verified)
    state = derive_state(facts, summary, verified=verified)
    raised: list[AlertSpec] = []
    resolved: list[str] = []
    due: list[int] = []
    fixed: list[int] = []

    def at_deadline(deadline: int) -> None:
        due.append(deadline)
        fixed.append(deadline)

    cname = (summary.cname if summary else None) or (facts.start.cname if facts.start else None)
    files = file_names(facts, summary)

    # 1. backuped: the files must reach the customer's bucket within the deadline.
    if upload_status(facts, summary) == "backuped" and facts.backuped_ms is not None:
        deadline = facts.backuped_ms + _ms(deadlines.backup)
        if verified:
            resolved.append("backup_not_uploaded")
        elif now_ms >= deadline:
            checked = verification or Verification(False, reason="not checked yet")
            later = int(deadlines.backup.total_seconds())
            # "Not there" only when the bucket said so; otherwise what stopped the check
            # (an unsupported vendor, no credentials, a timeout): it is unconfirmed, and
            # whoever reads the alert must look themselves.
            found = (
                f"its files are not in your storage {later} s later: "
                if checked.missing
                else f"{later} s later its files could not be confirmed in your storage: "
            )
            raised.append(AlertSpec(
                "backup_not_uploaded",
                f"Recording {facts.sid} ({cname}) went to Agora's backup and {found}"
                + (checked.reason or f"{len(checked.missing)} object(s) missing"),
                {"files": list(files), "missing": list(checked.missing),
                 "checked": list(checked.checked), "reason": checked.reason,
                 "backuped_ms": facts.backuped_ms, "advice": CONTACT_SUPPORT},
            ))  # fmt: skip
            due.append(now_ms + recheck_delay_ms(deadlines, facts.storage_checks))
        else:
            at_deadline(deadline)

    # 2. stop could not say where the upload went, and no callback said it since.
    stop = facts.stop
    if stop is not None and stop.nothing_recorded:
        raised.append(AlertSpec(
            "nothing_recorded",
            f"Agora recorded nothing for {facts.sid} ({cname}): stop answered 206 code 435, "
            "nobody published a stream.",
            {"http_status": stop.http_status, "code": stop.code},
        ))  # fmt: skip
    if stop is None or not stop.upload_status_unknown or has_ended_by_itself(facts, summary):
        # (A retried stop's answer may have settled an earlier 206 since; a stop that found
        # no task says nothing about an upload Agora's own exit ended.)
        resolved.append("upload_status_unknown")
    else:
        deadline = stop.stopped_ms + _ms(deadlines.upload_status)
        if upload_status(facts, summary) is not None:
            resolved.append("upload_status_unknown")
        elif now_ms >= deadline:
            progress = summary.upload_progress if summary else None
            # Progress 10000 says every file was uploaded, not where: to your storage, or
            # to Agora's backup (whose backuped notification may be the one lost), so it
            # changes what the alert says, not whether it is raised.
            complete = (
                " uploading_progress reached 10000, so Agora's uploader sent every file, but "
                "nothing says whether to your storage or to Agora's backup: check your storage."
                if progress == UPLOAD_COMPLETE else ""
            )  # fmt: skip
            raised.append(AlertSpec(
                "upload_status_unknown",
                f"Stop of {facts.sid} ({cname}) answered {stop.http_status} "
                f"(uploadingStatus {stop.uploading_status or 'absent'}) and neither uploaded "
                f"nor backuped arrived within {int(deadlines.upload_status.total_seconds())} s."
                + complete,
                {"http_status": stop.http_status, "code": stop.code,
                 "uploading_status": stop.uploading_status, "upload_progress": progress},
            ))  # fmt: skip
        else:
            at_deadline(deadline)

    # 2b. Agora ended the session by itself after recording, and no upload status came.
    # Its exit "after ... files were uploaded" (FACTS §3, exitStatus 0) implies an uploaded
    # or a backuped, which NCS may have dropped (§5.1): without this the session was final
    # (exited_idle) and a lost backuped was never checked.
    if summary is not None and has_recorded(summary) and has_ended_by_itself(facts, summary):
        deadline = summary.last_seen_ms + _ms(deadlines.upload_status)
        if upload_status(facts, summary) is not None:
            resolved.append("upload_status_unknown")
        elif now_ms >= deadline:
            raised.append(AlertSpec(
                "upload_status_unknown",
                f"Agora ended {facts.sid} ({cname}) by itself (session_exit) after it "
                "recorded, and neither uploaded nor backuped arrived within "
                f"{int(deadlines.upload_status.total_seconds())} s of its last event: the "
                "upload notification may be lost. Check your storage.",
                {"last_seen_ms": summary.last_seen_ms,
                 "upload_progress": summary.upload_progress, "files": list(files)},
            ))  # fmt: skip
        else:
            at_deadline(deadline)

    # 3. started, but the recorder never said so.
    if facts.start is not None and not has_started(summary) and state == "started":
        deadline = facts.start.started_ms + _ms(deadlines.recorder_start)
        if now_ms >= deadline:
            raised.append(AlertSpec(
                "recorder_not_started",
                f"Recording {facts.sid} ({cname}) was started but no recorder or uploader "
                f"start event arrived within {int(deadlines.recorder_start.total_seconds())} s.",
                {"started_ms": facts.start.started_ms, "resource_id": facts.start.resource_id},
            ))  # fmt: skip
        else:
            at_deadline(deadline)
    elif has_started(summary) or facts.stop is not None:
        resolved.append("recorder_not_started")

    # 7. an active session gone silent.
    if state in ("started", "recording"):
        max_idle_s = facts.start.max_idle_s if facts.start else 30
        last = max(
            summary.last_seen_ms if summary else 0,
            facts.start.started_ms if facts.start else 0,
        )
        deadline = last + max_idle_s * 1000 + _ms(deadlines.stale_margin)
        if now_ms >= deadline:
            raised.append(AlertSpec(
                "stale_session",
                f"Recording {facts.sid} ({cname}) has been silent since {last} ms "
                f"(maxIdleTime {max_idle_s} s plus margin).",
                {"last_activity_ms": last, "max_idle_s": max_idle_s},
            ))  # fmt: skip
            due.append(now_ms + _ms(deadlines.poll))
        else:
            at_deadline(deadline)
    else:
        resolved.append("stale_session")

    # 6. notifications lost: Agora no longer runs a task we still think is recording (its
    # query has answered 404 "failed to find worker" for longer than a migration takes),
    # and no exit, upload or stop told us how it ended. The final upload state cannot be
    # confirmed.
    active = state in ("started", "recording")
    confirm_at = gone_confirmed_at(facts, deadlines)
    if confirm_at is None or not active:
        resolved.append("upload_unconfirmed")
    elif facts.last_query_ms is None or facts.last_query_ms < confirm_at:
        at_deadline(confirm_at)  # the query then that tells a migration from an end
    else:
        raised.append(AlertSpec(
            "upload_unconfirmed",
            f"Agora no longer runs recording {facts.sid} ({cname}), but no session_exit, "
            "uploaded or backuped notification arrived: notifications were lost and the final "
            "upload state cannot be confirmed. Check the files in your storage.",
            {"last_query_ms": facts.last_query_ms, "task_gone_ms": facts.task_gone_ms,
             "files": list(files)},
        ))  # fmt: skip

    # 8. an upload Agora itself calls failed, and a stop file list the callbacks contradict.
    # Any abnormal upload, not only the latest: after a failover one recorder's upload may
    # fail and the next one's succeed, and the alert must not depend on their arrival order.
    if summary is not None and (summary.upload_failures or summary.upload_ok is False):
        failures = max(summary.upload_failures, 1)
        raised.append(AlertSpec(
            "upload_failed",
            f"Agora reported {failures} upload(s) with a non-zero status for {facts.sid} "
            f"(the latest: {summary.upload_status}, "
            f"{'failed' if summary.upload_ok is False else 'normal'}).",
            {"upload_status": summary.upload_status, "upload_failures": failures,
             "latest_upload_ok": summary.upload_ok, "files": list(files)},
        ))  # fmt: skip
    callback_files = {f.file_name for f in summary.files} if summary else set()
    if callback_files:
        callback_files.update(named_earlier)
    stop_files = set(stop.file_names) if stop is not None else set()
    if not (callback_files and stop_files and not stop_files <= callback_files):
        resolved.append("file_list_mismatch")  # (a later callback may name them)
    else:
        raised.append(AlertSpec(
            "file_list_mismatch",
            f"Stop of {facts.sid} lists files the upload callbacks do not.",
            {"only_in_stop": sorted(stop_files - callback_files),
             "only_in_callbacks": sorted(callback_files - stop_files)},
        ))  # fmt: skip

    # A clean upload however the session ended: the app's stop, or Agora's idle exit
    # (exited_idle), which may come before or after the upload (FACTS §2: 31 after 11).
    status = upload_status(facts, summary)
    if state != "failed" and (status == "uploaded" or (status == "backuped" and verified)):
        resolved.extend(ERROR_KINDS_RESOLVED_BY_A_CLEAN_UPLOAD)

    raised_kinds = {a.kind for a in raised}
    # Nothing is watched longer than the data it is about is kept.
    anchor = facts.start.started_ms if facts.start else (summary.first_seen_ms if summary else 0)
    expired = now_ms - anchor > _ms(deadlines.give_up)
    final = expired or (state in FINAL_STATES and not due)
    return Assessment(
        state=state,
        raise_alerts=tuple(raised),
        resolve_kinds=tuple(k for k in dict.fromkeys(resolved) if k not in raised_kinds),
        next_due_ms=None if final else min(due, default=now_ms + _ms(deadlines.poll)),
        deadline_ms=None if final else min(fixed, default=None),
    )


# Rule 4: events that are alerts by themselves.
WARN_SLICE_TO_BACKUP = 32
MODULE_UPLOADER = 1
WEB_STOP_CODES_OK = (0, 1)  # ok, max_recording_hour
EXIT_STATUS_NORMAL = 0  # FACTS §3, event 11: 1 is abnormal (bad parameters, say)


# Agora's errorLevel (FACTS §3): 1 debug, 2 minor, 3 medium, 4 major, 5 fatal.
ERROR_LEVEL_DEBUG, ERROR_LEVEL_MINOR = 1, 2


def error_severity(details: Mapping[str, Any]) -> Severity:
    """How loud an Agora error (event 1) is: a debug one is info (kept, never delivered), a
    minor one a warning, the rest critical. The uploader's errors are critical at any
    level (files may be missing), as is an error that gives no level."""
    level = whole_number(details.get("errorLevel"))
    if whole_number(details.get("module")) == MODULE_UPLOADER or level is None:
        return "critical"
    if level <= ERROR_LEVEL_DEBUG:
        return "info"
    return "warning" if level == ERROR_LEVEL_MINOR else "critical"


def alerts_for_event(
    event_type: int, details: Mapping[str, Any], sid: str
) -> tuple[AlertSpec, ...]:
    """Alerts a single callback raises, whatever else is known about its session."""
    if event_type == EventType.CLOUD_RECORDING_ERROR:
        return (AlertSpec(
            "recording_error",
            f"Agora error {details.get('errorCode')} in module {details.get('module')} "
            f"(level {details.get('errorLevel')}) for {sid}: {details.get('errorMsg', '')}",
            {k: details.get(k) for k in ("module", "errorLevel", "errorCode", "stat", "errorMsg")},
            error_severity(details),
        ),)  # fmt: skip
    if (
        event_type == EventType.CLOUD_RECORDING_WARNING
        and whole_number(details.get("module")) == MODULE_UPLOADER
        and whole_number(details.get("warnCode")) == WARN_SLICE_TO_BACKUP
    ):
        return (AlertSpec(
            "upload_warning",
            f"Agora's uploader sent a slice of {sid} to Agora Cloud Backup (warning 32): your "
            "storage refused or timed out; expect a backuped upload.",
            {"module": details.get("module"), "warnCode": details.get("warnCode")},
        ),)  # fmt: skip
    if event_type == EventType.DOWNLOAD_FAILED:
        return (AlertSpec(
            "download_failed",
            f"Agora could not download {sid}'s files from your storage for transcoding.",
            {**{k: details.get(k) for k in ("vendor", "region", "bucket")},
             # The Chinese docs spell it filename (FACTS.md conflicts table).
             "fileName": details.get("fileName", details.get("filename"))},
        ),)  # fmt: skip
    if event_type == EventType.SESSION_EXIT and whole_number(details.get("exitStatus")) not in (
        EXIT_STATUS_NORMAL,
        None,
    ):
        return (AlertSpec(
            "recording_error",
            f"Agora ended recording {sid} abnormally (session_exit, exitStatus "
            f"{details.get('exitStatus')}: bad start parameters, say); its files may be missing.",
            {"exitStatus": details.get("exitStatus")},
        ),)  # fmt: skip
    if event_type == EventType.SESSION_FAILOVER:
        return (AlertSpec(
            "failover",
            f"Agora moved recording {sid} to another server (new uid {details.get('newUid')}). "
            "REST calls may answer 404 for up to 90 s; new files get a bak<n>_ prefix.",
            {"newUid": details.get("newUid")},
        ),)  # fmt: skip
    if (
        event_type == EventType.WEB_RECORDER_STOPPED
        and whole_number(details.get("code")) not in WEB_STOP_CODES_OK
    ):
        return (AlertSpec(
            "recording_error",
            f"Web recording {sid} stopped: {details.get('message')} ({details.get('code')}).",
            {k: details.get(k) for k in ("code", "message", "details")},
        ),)  # fmt: skip
    if event_type == EventType.WEB_RECORDER_CAPABILITY_LIMIT:
        return (AlertSpec(
            "recording_error",
            f"Web recording {sid} hit a capability limit ({details.get('limitType')}) and stopped.",
            {"limitType": details.get("limitType")},
        ),)  # fmt: skip
    return ()
