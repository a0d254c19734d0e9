"""Reconciliation: compare what the app did with what Agora said, raise and resolve alerts.

RQ entry points are thin: reconcile_session(sid) and sweep_active_sessions(). The work is
reconcile(ctx, sid, now_ms), which loads the facts, asks workers.lifecycle.assess() and
applies its answer.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime

from rq.exceptions import DuplicateJobError

from webhook.agora_client import AgoraClient, AgoraError, AgoraNotFoundError
from webhook.jobs import (
    JOB_RETRY,
    JOB_TIMEOUT_S,
    RECONCILE_SESSION,
    enqueue_handoffs,
    reconcile_job_id,
)
from webhook.recordings import RecordingFacts
from webhook.store import now_ms
from workers.context import WorkerContext, current_context
from workers.lifecycle import (
    Assessment,
    assess,
    needs_query,
    needs_storage_check,
    stop_names_unlisted_files,
    upload_status,
)
from workers.notify import announce_pending
from workers.session_lock import SessionBusyError, session_lock

logger = logging.getLogger(__name__)

SWEEP_JOB_ID = "sweep-active-sessions"
SWEEP = "workers.reconcile.sweep_active_sessions"
SWEEP_BACKOFF_MS = 5 * 60_000
# A hand-off still pending this long after its callback was stored has lost its job.
HANDOFF_GRACE_MS = 2 * 60_000


class SweepError(Exception):
    """Some sessions could not be reconciled in this sweep (see the log for each)."""


def reconcile_session(sid: str) -> str:
    """RQ entry point: thin on purpose."""
    ctx = current_context()
    with session_lock(ctx.redis, sid):
        return reconcile(ctx, sid, now_ms()).state


def reconcile(ctx: WorkerContext, sid: str, now: int) -> Assessment:
    """Derive the session's state, raise and resolve its alerts, schedule the next look."""
    facts = ctx.recordings.facts(sid)
    summary = ctx.callbacks.session(sid)
    if facts.start is None and summary is None:
        ctx.recordings.finish(sid)  # expired, or never ours
        return Assessment(state="unknown")
    if upload_status(facts, summary) == "backuped" and facts.backuped_ms is None:
        stop = facts.stop
        from_stop = stop.stopped_ms if stop and stop.uploading_status == "backuped" else now
        ctx.recordings.mark_backuped(sid, min(from_stop, now))
        facts = ctx.recordings.facts(sid)
    agora = ctx.agora
    if agora is not None and needs_query(facts, summary, ctx.deadlines, now):
        status, task_gone = query_status(agora, facts)
        ctx.counters.count("agora_query", str(status))
        ctx.recordings.record_query(sid, at_ms=now, http_status=status, task_gone=task_gone)
        facts = ctx.recordings.facts(sid)
    verification = None
    if needs_storage_check(facts, summary, ctx.deadlines, now):
        verification = ctx.verify_storage(facts, summary)
        ctx.counters.count("storage_check", "verified" if verification.verified
                           else "missing" if verification.missing else "unchecked")  # fmt: skip
        ctx.recordings.set_verification(
            sid,
            verified_ms=now if verification.verified else None,
            details={"verified": verification.verified, "checked": list(verification.checked),
                     "missing": list(verification.missing), "reason": verification.reason,
                     "at_ms": now},
        )  # fmt: skip
        facts = ctx.recordings.facts(sid)
    named_earlier: tuple[str, ...] = ()
    if stop_names_unlisted_files(facts, summary):  # rare: the log is read only then
        named_earlier = ctx.files_named_by_callbacks(sid)
    assessment = assess(facts, summary, ctx.deadlines, now, verification, named_earlier)
    apply(ctx, sid, assessment, now, cname=(summary.cname if summary else None)
          or (facts.start.cname if facts.start else None))  # fmt: skip
    ctx.counters.count("reconciled", assessment.state)
    return assessment


def query_status(agora: AgoraClient, facts: RecordingFacts) -> tuple[int, bool]:
    """Ask Agora whether it still runs the task: the answer's HTTP status (0: none came),
    and whether it says the task is gone (404 "failed to find worker")."""
    start = facts.start
    if start is None:  # pragma: no cover - needs_query() checks
        raise ValueError("query needs the start call")
    try:
        agora.query(start.resource_id, facts.sid, start.mode)
    except AgoraNotFoundError:
        return 404, True
    except AgoraError as err:
        # Rate limits, timeouts, 5xx, and a 404 "no Route matched", which is our URL or
        # app id, not the task: no answer about the task; polled again later.
        logger.warning("query failed", extra={"sid": facts.sid, "reason": err.reason})
        return err.http_status or 0, False
    return 200, False


def apply(
    ctx: WorkerContext, sid: str, assessment: Assessment, now: int, cname: str | None
) -> None:
    # What a dead worker left unannounced goes out before anything here changes it.
    announce_pending(ctx, sid)
    if ctx.recordings.set_state(sid, assessment.state, now):
        logger.info("session state", extra={"sid": sid, "state": assessment.state})
    for spec in assessment.raise_alerts:
        _, transition = ctx.alerts.raise_alert(
            sid=sid, cname=cname, kind=spec.kind, message=spec.message,
            evidence=spec.evidence, now_ms=now, severity=spec.severity,
        )  # fmt: skip
        if transition:
            ctx.counters.count("alert_raised", spec.kind)
    for kind in assessment.resolve_kinds:
        if ctx.alerts.resolve(sid, kind, now_ms=now, note=f"cleared: {assessment.state}"):
            ctx.counters.count("alert_resolved", kind)
    # Every transition not yet announced, this run's included: delivery job ids are
    # deterministic, so announcing twice queues nothing twice.
    announce_pending(ctx, sid)
    if assessment.next_due_ms is None:
        ctx.recordings.finish(sid)
        return
    ctx.recordings.schedule(sid, assessment.next_due_ms)
    if assessment.deadline_ms is not None:
        schedule_check(ctx, sid, assessment.deadline_ms)


def schedule_check(ctx: WorkerContext, sid: str, due_ms: int) -> None:
    """An RQ scheduled job at the due time (kept in Redis: a worker restart loses none)."""
    with contextlib.suppress(DuplicateJobError):
        ctx.queue.enqueue_at(
            datetime.fromtimestamp(due_ms / 1000, tz=UTC),
            RECONCILE_SESSION,
            sid,
            job_id=reconcile_job_id(sid, due_ms),
            unique=True,
            job_timeout=JOB_TIMEOUT_S,
            retry=JOB_RETRY,
            result_ttl=60,
            description=f"check {sid}",
        )


def sweep_active_sessions() -> int:
    """RQ entry point, every sweep interval: look at every active session that is due.

    It schedules its own next run first, so one failed sweep never ends the chain."""
    ctx = current_context()
    schedule_sweep(ctx, now_ms() + int(ctx.settings.sweep_interval.total_seconds() * 1000))
    requeue_lost_handoffs(ctx, now_ms())
    due = ctx.recordings.due(now_ms())
    failed = []
    for sid in due:
        try:
            with session_lock(ctx.redis, sid):
                reconcile(ctx, sid, now_ms())
        except SessionBusyError:
            continue  # the job holding it reconciles it
        except Exception:  # one broken session must not starve the others
            logger.exception("reconciliation failed", extra={"sid": sid})
            ctx.recordings.schedule(sid, now_ms() + SWEEP_BACKOFF_MS)
            failed.append(sid)
    if failed:
        # After every other session had its turn: RQ records the failure.
        raise SweepError(f"{len(failed)} session(s) failed to reconcile: {failed[:10]}")
    return len(due)


def requeue_lost_handoffs(ctx: WorkerContext, now: int) -> int:
    """Callbacks stored whose hand-off never became a job (a relay took it and then failed
    or died, or no worker ran for a while): enqueue their follow-up now. A job that still
    exists is not duplicated (unique ids); a job that finished has already cleared its
    hand-off."""
    lost = ctx.callbacks.pending_handoffs(older_than_ms=now - HANDOFF_GRACE_MS)
    enqueue_handoffs(ctx.queue, lost)
    return len(lost)


def schedule_sweep(ctx: WorkerContext, at_ms: int) -> None:
    # One sweep per interval slot: concurrent workers seeding it produce one job.
    slot = at_ms // int(ctx.settings.sweep_interval.total_seconds() * 1000)
    with contextlib.suppress(DuplicateJobError):
        ctx.queue.enqueue_at(
            datetime.fromtimestamp(at_ms / 1000, tz=UTC),
            SWEEP,
            job_id=f"{SWEEP_JOB_ID}-{slot}",
            unique=True,
            job_timeout=max(JOB_TIMEOUT_S, 300),
            result_ttl=60,
            description="sweep active sessions",
        )


def seed_sweep(ctx: WorkerContext) -> None:
    """Called at worker start: make sure a sweep is scheduled."""
    schedule_sweep(ctx, now_ms() + 1000)
