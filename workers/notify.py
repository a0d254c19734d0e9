"""Alert deliveries: one RQ job per (alert transition, sink), retried with backoff.

announce() is called where a transition happens; deliver_alert() is the job. Every attempt
is kept in the alert store, so a failing sink is visible to operators.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Mapping
from typing import Any

from rq import Retry
from rq.exceptions import DuplicateJobError

from webhook.alerts import Alert, Transition
from webhook.store import now_ms
from workers.alerting import (
    DELIVERY_RETRY_INTERVALS_S,
    AlertSink,
    AlertSinkSettings,
    DeliveryError,
    build_sinks,
    deliver,
)
from workers.context import WorkerContext, current_context

logger = logging.getLogger(__name__)

DELIVER_ALERT = "workers.notify.deliver_alert"


@functools.cache
def configured_sinks() -> dict[str, AlertSink]:
    # Read once per worker process, at the first delivery.
    return build_sinks(AlertSinkSettings.from_env(os.environ))


def announce(ctx: WorkerContext, alert: Alert, transition: Transition) -> None:
    """Queue the delivery of one transition to every configured sink.

    The job carries the alert as it stood at the transition: a retry that runs after the
    alert moved on (acknowledged, resolved, raised again as a new episode) still sends that
    transition, with the same webhook-id, and never the next episode's data."""
    snapshot = alert.as_of(transition).as_document()
    for sink in configured_sinks():
        with contextlib.suppress(DuplicateJobError):
            ctx.queue.enqueue_call(
                DELIVER_ALERT,
                args=(alert.id, transition, sink, snapshot),
                job_id=f"deliver-{alert.id}-{transition}-{alert.raised_ms}-{sink}",
                unique=True,
                retry=Retry(max=len(DELIVERY_RETRY_INTERVALS_S),
                            interval=list(DELIVERY_RETRY_INTERVALS_S)),
                result_ttl=3600,
                description=f"{transition} {alert.kind} for {alert.sid} -> {sink}",
            )  # fmt: skip


def announce_pending(ctx: WorkerContext, sid: str) -> None:
    """Queue the deliveries of every transition of the session's alerts not announced yet:
    after each change, and before any, so one a dead worker left (a resolution, say) goes
    out as its own episode before a new raise of the alert replaces it."""
    for alert in ctx.alerts.for_session(sid):
        for transition in alert.unannounced:
            announce(ctx, alert, transition)
        if alert.unannounced:
            ctx.alerts.mark_announced(alert.id, alert.unannounced)


def deliver_alert(
    alert_id: str,
    transition: Transition,
    sink_name: str,
    snapshot: Mapping[str, Any] | None = None,
) -> None:
    """RQ entry point: send one transition to one sink; failures go to RQ's Retry.

    snapshot: the alert at the transition (jobs queued by an older version have none, and
    send the alert as it is now)."""
    ctx = current_context()
    alert = Alert.from_document(snapshot) if snapshot is not None else ctx.alerts.get(alert_id)
    if alert is None:
        logger.warning("alert to deliver is gone", extra={"alert_id": alert_id})
        return
    try:
        deliver(configured_sinks(), sink_name, alert, transition)
    except DeliveryError as err:
        ctx.alerts.record_delivery(
            alert_id, sink_name, transition, ok=False, detail=str(err), now_ms=now_ms()
        )
        raise
    ctx.alerts.record_delivery(alert_id, sink_name, transition, ok=True, detail="", now_ms=now_ms())
