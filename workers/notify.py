"""Alert deliveries: one RQ job per (alert transition, sink), retried with backoff.

announce() is called where a transition happens; deliver_alert() is the job. Every attempt
is kept in the alert store, so a failing sink is visible to operators.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os

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
    """Queue the delivery of one transition to every configured sink."""
    for sink in configured_sinks():
        with contextlib.suppress(DuplicateJobError):
            ctx.queue.enqueue_call(
                DELIVER_ALERT,
                args=(alert.id, transition, sink),
                job_id=f"deliver-{alert.id}-{transition}-{alert.raised_ms}-{sink}",
                unique=True,
                retry=Retry(max=len(DELIVERY_RETRY_INTERVALS_S),
                            interval=list(DELIVERY_RETRY_INTERVALS_S)),
                result_ttl=3600,
                description=f"{transition} {alert.kind} for {alert.sid} -> {sink}",
            )  # fmt: skip


def deliver_alert(alert_id: str, transition: Transition, sink_name: str) -> None:
    """RQ entry point: send one transition to one sink; failures go to RQ's Retry."""
    ctx = current_context()
    alert = ctx.alerts.get(alert_id)
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
