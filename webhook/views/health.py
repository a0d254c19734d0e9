"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

from flask import Blueprint, Response
from flask.typing import ResponseReturnValue
from prometheus_client import CONTENT_TYPE_LATEST

from webhook.extensions import current_alerts, current_queue, current_recordings, current_store
from webhook.metrics import recent_workers, render
from webhook.openapi import openapi_document
from webhook.store.connections import write_readiness

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """The process is up and answering."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """Ready to take callbacks: Redis takes writes. Not ready -> 503, so traffic goes
    elsewhere (a replica pointed at a Redis replica, say, while the others reach the primary).

    Workers are reported, not required: a web replica without workers still stores every
    callback (their follow-ups wait in the queue), while taking it out of the load
    balancer would make Agora's retries fail and its notifications be dropped."""
    # Both the event store (maybe a Redis Cluster) and the primary behind the queue must
    # answer: a callback needs the first, its hand-off the second.
    redis = current_recordings().redis
    # One probe when both are the same client (no Redis Cluster for the events).
    for client in dict.fromkeys((current_store().redis, redis)):
        state = write_readiness(client)
        if state != "ok":
            return {"status": "unavailable", "redis": state}, 503
    alive = recent_workers(redis)
    return {"status": "ready", "redis": "ok", "workers": alive,
            "workers_status": "ok" if alive else "none with a recent heartbeat"}  # fmt: skip


@bp.get("/api/v1/openapi.json")
def openapi() -> ResponseReturnValue:
    """The API's OpenAPI document, generated from the marshmallow schemas."""
    return openapi_document()


@bp.get("/metrics")
def metrics() -> ResponseReturnValue:
    """Prometheus exposition: callbacks, refusals, latencies, queue, jobs, alerts."""
    body = render(current_recordings().redis, current_queue(), current_alerts(), current_store())
    return Response(body, mimetype=CONTENT_TYPE_LATEST.split(";")[0])
