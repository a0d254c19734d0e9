"""What happened to a recording, for ops: GET /api/v1/recordings, .../<sid>, .../<sid>/events.

Lists come from the indexes (sessions by activity, by channel, by state), never a scan.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request
from flask.typing import ResponseReturnValue

from webhook.errors import NotFoundError
from webhook.extensions import current_alerts, current_recordings, current_store
from webhook.reports import recording_document, row_document, timeline_document
from webhook.schemas import RECORDING_LIST_QUERY_SCHEMA, encode_cursor
from webhook.store.overviews import SessionRow, session_rows
from webhook.views.auth import require_token

bp = Blueprint("sessions", __name__, url_prefix="/api/v1/recordings")
bp.before_request(require_token)


@bp.get("")
def list_recordings() -> ResponseReturnValue:
    """Sessions by last activity (or by when they entered `state`), newest first."""
    query = RECORDING_LIST_QUERY_SCHEMA.load(request.args)
    limit, after = query["limit"], query.get("cursor")
    if "state" in query:
        rows = current_recordings().in_state(query["state"], after=after, limit=limit)
    else:
        rows = current_store().recent_sessions(
            cname=query.get("cname"), since_ms=query.get("since"), after=after, limit=limit
        )
    found = session_rows(
        current_store().redis, current_recordings().redis, [sid for sid, _ in rows]
    )
    items = [row_document(row) for row in found if _matches(row, query)]
    last_sid, last_score = rows[-1] if rows else ("", 0)
    next_cursor = encode_cursor(last_score, last_sid) if len(rows) == limit else None
    return {"recordings": items, "next_cursor": next_cursor}


def _matches(row: SessionRow, query: dict[str, Any]) -> bool:
    """The state index is the listing; cname and since then narrow it (the other indexes
    need no check: they are the filter)."""
    if "state" not in query:
        return True
    if query.get("cname") and row.cname != query["cname"]:
        return False
    return not (
        query.get("since") and (row.last_seen_ms is None or row.last_seen_ms < query["since"])
    )


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
