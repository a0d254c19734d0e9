"""process_callback: the follow-up of one stored callback that needs it."""

from __future__ import annotations

import logging
from typing import Any

from webhook.alerts import alert_id
from webhook.events import EventType, is_console_test
from webhook.store import now_ms
from workers.context import WorkerContext, current_context
from workers.lifecycle import alerts_for_event
from workers.notify import announce_pending
from workers.reconcile import reconcile
from workers.session_lock import session_lock

logger = logging.getLogger(__name__)


def process_callback(sid: str, notice_id: str, entry_id: str) -> None:
    """RQ entry point: thin on purpose. The work lives in follow_up_callback()."""
    ctx = current_context()
    with session_lock(ctx.redis, sid):
        follow_up_callback(ctx, sid, notice_id, entry_id, now_ms())


def follow_up_callback(
    ctx: WorkerContext, sid: str, notice_id: str, entry_id: str, now: int
) -> None:
    """Raise what the event itself says, reconcile the session, then confirm the hand-off."""
    event = ctx.callbacks.event(sid, entry_id)
    document: Any = event.document if event is not None else None
    payload = document.get("payload") if isinstance(document, dict) else None
    payload = payload if isinstance(payload, dict) else {}
    cname = payload.get("cname")
    if event is None:
        # Expired by retention before the job ran: nothing left to follow up.
        logger.warning("callback to follow up is gone", extra={"sid": sid, "notice_id": notice_id})
    elif is_console_test(cname, str(payload.get("uid"))):
        # The web side hands none of these off; one handed off before it knew them (an
        # older version) must not raise an alert about a recording that never ran either.
        logger.info("console test callback: no follow-up", extra={"sid": sid})
    else:
        details = payload.get("details")
        # A transition a dead worker left unannounced goes out before a raise replaces it.
        announce_pending(ctx, sid)
        for spec in alerts_for_event(event.event_type, details or {}, sid):
            if _already_raised_by(ctx, sid, spec.kind, notice_id):
                # RQ re-runs a job whose worker died, even after its last step: the same
                # event must not open a second episode of an alert it raised (and that
                # may have been resolved since).
                continue
            _, transition = ctx.alerts.raise_alert(
                sid=sid, cname=cname, kind=spec.kind, message=spec.message,
                evidence={**spec.evidence, "notice_id": notice_id}, now_ms=now,
                severity=spec.severity,
            )  # fmt: skip
            if transition:
                ctx.counters.count("alert_raised", spec.kind)
        # (reconcile() below queues the deliveries of every transition not yet announced)
        if event.event_type == EventType.SESSION_FAILOVER:
            ctx.recordings.mark_failover(sid, event.received_ms)
        if event.event_type == EventType.BACKUPED and not event.redundant_of:
            # The five-minute clock starts when Agora told us, not when this job ran.
            ctx.recordings.mark_backuped(sid, event.received_ms)
        reconcile(ctx, sid, now)
    ctx.callbacks.complete_handoff(sid, notice_id, entry_id)


def _already_raised_by(ctx: WorkerContext, sid: str, kind: str, notice_id: str) -> bool:
    current = ctx.alerts.get(alert_id(sid, kind))
    return current is not None and current.evidence.get("notice_id") == notice_id
