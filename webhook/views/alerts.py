"""Alerts for operators: GET /api/v1/alerts and POST /api/v1/alerts/<id>/ack."""

from __future__ import annotations

from flask import Blueprint
from flask.typing import ResponseReturnValue

from webhook.errors import NotFoundError
from webhook.extensions import current_alerts
from webhook.schemas import ALERT_QUERY_SCHEMA
from webhook.store import now_ms
from webhook.views.auth import require_token
from webhook.views.inputs import load_query

bp = Blueprint("alerts", __name__, url_prefix="/api/v1/alerts")
bp.before_request(require_token)


@bp.get("")
def list_alerts() -> ResponseReturnValue:
    """Alerts in one state (default: open), newest change first, optionally of one kind."""
    query = load_query(ALERT_QUERY_SCHEMA)
    found = current_alerts().in_state(query["state"], limit=query["limit"])
    if query.get("kind"):
        found = [a for a in found if a.kind == query["kind"]]
    return {"alerts": [a.as_document() for a in found]}


@bp.post("/<alert_id>/ack")
def acknowledge(alert_id: str) -> ResponseReturnValue:
    """An operator has seen it: open -> acknowledged (still resolved automatically later)."""
    alert = current_alerts().acknowledge(alert_id, now_ms=now_ms())
    if alert is None:
        raise NotFoundError(f"no alert {alert_id!r}")
    return alert.as_document()
