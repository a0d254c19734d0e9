"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

from flask import Blueprint
from flask.typing import ResponseReturnValue

from webhook.extensions import current_store

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """The process is up and answering."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """Ready to take callbacks: Redis answers. Not ready -> 503, so traffic goes elsewhere."""
    if current_store().ping():
        return {"status": "ready", "redis": "ok"}
    return {"status": "unavailable", "redis": "unreachable"}, 503
