"""process_callback: the follow-up of one stored callback that needs it."""

from __future__ import annotations

import logging

from rq import get_current_job

from webhook.store import CallbackStore

logger = logging.getLogger(__name__)


def process_callback(sid: str, notice_id: str, entry_id: str) -> None:
    """RQ entry point: thin on purpose. The work lives in follow_up_callback()."""
    job = get_current_job()
    if job is None:  # pragma: no cover - RQ always runs jobs with a current job
        raise RuntimeError("process_callback must run inside an RQ job")
    follow_up_callback(CallbackStore(job.connection), sid, notice_id, entry_id)


def follow_up_callback(store: CallbackStore, sid: str, notice_id: str, entry_id: str) -> None:
    """Look at one stored callback, then confirm the hand-off.

    Reconciliation (issue #3) plugs in here; until then the follow-up is a log line.
    """
    event = store.event(sid, entry_id)
    if event is None:
        # Expired by retention before the job ran: nothing left to follow up.
        logger.warning("callback to follow up is gone", extra={"sid": sid, "notice_id": notice_id})
    else:
        logger.info(
            "callback followed up",
            extra={"sid": sid, "notice_id": notice_id, "event_type": event.event_type},
        )
    store.complete_handoff(sid, notice_id, entry_id)
