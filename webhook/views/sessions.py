"""What happened to a recording, for ops: GET /api/v1/recordings, .../<sid>, .../<sid>/events.

Lists come from the indexes (sessions by activity, by channel, by state), never a scan.
"""

from __future__ import annotations

from flask import Blueprint
from flask.typing import ResponseReturnValue

from webhook.errors import NotFoundError
from webhook.extensions import current_alerts, current_recordings, current_store
from webhook.reports import recording_document, row_document, session_page, timeline_document
from webhook.schemas import RECORDING_LIST_QUERY_SCHEMA
from webhook.views.auth import require_token
from webhook.views.inputs import load_query

bp = Blueprint("sessions", __name__, url_prefix="/api/v1/recordings")
bp.before_request(require_token)


@bp.get("")
def list_recordings() -> ResponseReturnValue:
    """Sessions by last activity (or by when they entered `state`), newest first."""
    query = load_query(RECORDING_LIST_QUERY_SCHEMA)
    rows, next_cursor = session_page(current_store(), current_recordings(), query)
    return {"recordings": [row_document(row) for row in rows], "next_cursor": next_cursor}


@bp.get("/<sid>")
def show_recording(sid: str) -> ResponseReturnValue:
    """Summary, lifecycle state, the app's calls, alerts and files of one session."""
    found = recording_document(sid, current_store(), current_recordings(), current_alerts())
    if found is None:
        raise NotFoundError(f"no recording {sid!r}")
    return found


@bp.get("/<sid>/events")
def list_events(sid: str) -> ResponseReturnValue:
    """The timeline ordered by sequence, with arrival order, flags and the gaps."""
    found = timeline_document(sid, current_store())
    if found is None:
        raise NotFoundError(f"no events for recording {sid!r}")
    return found
