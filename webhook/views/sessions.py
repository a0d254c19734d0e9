"""What happened to a recording, for ops: GET /api/v1/recordings, .../<sid>, .../<sid>/events.

Lists come from the indexes (sessions by activity, by channel, by state), never a scan.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request
from flask.typing import ResponseReturnValue

from webhook.errors import NotFoundError
from webhook.events import EventType
from webhook.extensions import current_alerts, current_recordings, current_store
from webhook.recordings import RecordingFacts
from webhook.schemas import RECORDING_LIST_QUERY_SCHEMA, encode_cursor
from webhook.store import SessionSummary, StoredEvent
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
    items = []
    for sid, _ in rows:
        summary = current_store().session(sid)
        if "state" in query and not _matches(summary, query):
            continue
        items.append(_overview(sid, summary, current_recordings().facts(sid)))
    last_sid, last_score = rows[-1] if rows else ("", 0)
    next_cursor = encode_cursor(last_score, last_sid) if len(rows) == limit else None
    return {"recordings": items, "next_cursor": next_cursor}


def _matches(summary: SessionSummary | None, query: dict[str, Any]) -> bool:
    if query.get("cname") and (summary is None or summary.cname != query["cname"]):
        return False
    return not (query.get("since") and (summary is None or summary.last_seen_ms < query["since"]))


@bp.get("/<sid>")
def show_recording(sid: str) -> ResponseReturnValue:
    """Summary, lifecycle state, the app's calls, alerts and files of one session."""
    summary = current_store().session(sid)
    facts = current_recordings().facts(sid)
    if summary is None and facts.start is None:
        raise NotFoundError(f"no recording {sid!r}")
    return _overview(sid, summary, facts) | {
        "summary": _summary(summary),
        "start": None if facts.start is None else {
            "resource_id": facts.start.resource_id, "cname": facts.start.cname,
            "uid": facts.start.uid, "mode": facts.start.mode,
            "storage": dict(facts.start.storage), "started_ms": facts.start.started_ms,
        },
        "stop": None if facts.stop is None else {
            "http_status": facts.stop.http_status, "code": facts.stop.code,
            "uploading_status": facts.stop.uploading_status,
            "files": list(facts.stop.file_names), "stopped_ms": facts.stop.stopped_ms,
        },
        "verification": dict(facts.verification),
        "calls": current_recordings().calls(sid),
        "alerts": [a.as_document() for a in current_alerts().for_session(sid)],
    }  # fmt: skip


@bp.get("/<sid>/events")
def list_events(sid: str) -> ResponseReturnValue:
    """The timeline ordered by sequence, with arrival order, flags and the gaps."""
    events = current_store().events(sid)
    if not events:
        raise NotFoundError(f"no events for recording {sid!r}")
    summary = current_store().session(sid)
    arrival = {e.entry_id: n for n, e in enumerate(events)}
    ordered = sorted(events, key=lambda e: (e.sequence is None, e.sequence or 0, e.received_ms))
    seen = {e.sequence for e in events if e.sequence is not None}
    highest = max(seen, default=-1)
    return {
        "sid": sid,
        "events": [_event(e, arrival[e.entry_id]) for e in ordered],
        "duplicates_received": summary.duplicates if summary else 0,
        "redundant_copies": sum(1 for e in events if e.redundant_of),
        "missing_sequences": [n for n in range(highest + 1) if n not in seen][:1000],
    }


def _event(event: StoredEvent, arrival_index: int) -> dict[str, Any]:
    known = EventType.known(event.event_type)
    return {
        "entry_id": event.entry_id,
        "notice_id": event.notice_id,
        "event_type": event.event_type,
        "msg_name": EventType(event.event_type).msg_name if known else None,
        "sequence": event.sequence,
        "sendts": event.sendts,
        "received_ms": event.received_ms,
        "arrival_index": arrival_index,
        "valid": not event.errors,
        "errors": dict(event.errors),
        "unknown_type": not known,
        "redundant_of": event.redundant_of,
        "body": event.document,
    }


def _overview(sid: str, summary: SessionSummary | None, facts: RecordingFacts) -> dict[str, Any]:
    alerts = current_alerts().for_session(sid)
    return {
        "sid": sid,
        "cname": (summary.cname if summary else None) or (facts.start.cname if facts.start
                                                          else None),
        "state": facts.state,
        "last_seen_ms": summary.last_seen_ms if summary else None,
        "upload_status": summary.upload_status if summary else None,
        "upload_progress": summary.upload_progress if summary else None,
        "open_alerts": sum(1 for a in alerts if a.state != "resolved"),
    }  # fmt: skip


def _summary(summary: SessionSummary | None) -> dict[str, Any] | None:
    if summary is None:
        return None
    return {
        "uid": summary.uid, "first_seen_ms": summary.first_seen_ms,
        "last_seen_ms": summary.last_seen_ms, "first_event_ms": summary.first_event_ms,
        "last_event_ms": summary.last_event_ms, "last_event_type": summary.last_event_type,
        "events": summary.events, "counts": {str(k): v for k, v in summary.counts.items()},
        "invalid": summary.invalid, "unknown_type": summary.unknown_type,
        "duplicates": summary.duplicates, "redundant": summary.redundant,
        "upload_progress": summary.upload_progress, "upload_status": summary.upload_status,
        "upload_ok": summary.upload_ok,
        "files": [{"file_name": f.file_name, "track_type": f.track_type, "uid": f.uid,
                   "slice_start_ms": f.slice_start_ms} for f in summary.files],
        "max_sequence": summary.max_sequence, "sequence_gaps": summary.sequence_gaps,
    }  # fmt: skip
