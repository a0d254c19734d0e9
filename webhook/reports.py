"""JSON documents about recordings, shared by the read API and the CLI. No Flask here."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from webhook.alerts import Alert
from webhook.events import EventType, is_console_test
from webhook.recordings import RecordingFacts
from webhook.schemas import encode_cursor
from webhook.store import CallbackStore, SessionSummary, StoredEvent
from webhook.store.alerts import AlertStore
from webhook.store.overviews import SessionRow, session_rows
from webhook.store.recordings import RecordingStore


def recording_document(
    sid: str, store: CallbackStore, recordings: RecordingStore, alerts: AlertStore
) -> dict[str, Any] | None:
    """Everything about one session; None when nothing is known about it."""
    summary = store.session(sid)
    facts = recordings.facts(sid)
    if summary is None and facts.start is None:
        return None
    found = alerts.for_session(sid)
    return overview(sid, summary, facts, found) | {
        "summary": summary_document(summary),
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
        "calls": recordings.calls(sid),
        "alerts": [a.as_document() for a in found],
    }  # fmt: skip


def timeline_document(sid: str, store: CallbackStore) -> dict[str, Any] | None:
    """The session's events by sequence, with arrival order, flags and the gaps."""
    events = store.events(sid)
    if not events:
        return None
    summary = store.session(sid)
    arrival = {e.entry_id: n for n, e in enumerate(events)}
    ordered = sorted(events, key=lambda e: (e.sequence is None, e.sequence or 0, e.received_ms))
    seen = {e.sequence for e in events if e.sequence is not None}
    return {
        "sid": sid,
        "events": [event_document(e, arrival[e.entry_id]) for e in ordered],
        "duplicates_received": summary.duplicates if summary else 0,
        "redundant_copies": sum(1 for e in events if e.redundant_of),
        "missing_sequences": missing_sequences(seen),
    }


def missing_sequences(seen: set[int], limit: int = 1000) -> list[int]:
    """The first `limit` sequence numbers below the highest seen that never arrived.

    Bounded by what arrived, not by the numbers in it: one signed callback may carry any
    sequence (2**70 was seen), and walking up to it would never end.
    """
    highest = max(seen, default=-1)
    gaps = (n for n in range(highest + 1) if n not in seen)
    return list(itertools.islice(gaps, limit))


def event_document(event: StoredEvent, arrival_index: int) -> dict[str, Any]:
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


def overview(
    sid: str, summary: SessionSummary | None, facts: RecordingFacts, alerts: Sequence[Alert]
) -> dict[str, Any]:
    return {
        "sid": sid,
        "cname": (summary.cname if summary else None) or (facts.start.cname if facts.start
                                                          else None),
        "state": facts.state,
        "last_seen_ms": summary.last_seen_ms if summary else None,
        "upload_status": summary.upload_status if summary else None,
        "upload_progress": summary.upload_progress if summary else None,
        "open_alerts": sum(1 for a in alerts if a.state != "resolved"),
        "console_test": summary is not None and is_console_test(summary.cname, summary.uid),
    }  # fmt: skip


def session_page(
    store: CallbackStore, recordings: RecordingStore, query: Mapping[str, Any]
) -> tuple[list[SessionRow], str | None]:
    """One page of sessions for a loaded RECORDING_LIST_QUERY_SCHEMA query (read API and
    dashboard): newest activity first, or newest entry into `state`, from the indexes.
    Returns the rows and the cursor of the next page (None on the last)."""
    limit, after = query["limit"], query.get("cursor")
    if "state" in query:
        found = recordings.in_state(query["state"], after=after, limit=limit)
    else:
        found = store.recent_sessions(
            cname=query.get("cname"), since_ms=query.get("since"), after=after, limit=limit
        )
    rows = session_rows(store.redis, recordings.redis, [sid for sid, _ in found])
    if "state" in query:
        # The state index is the listing there: cname and since then narrow it (the other
        # indexes need no check, they are the filter).
        rows = [row for row in rows if _matches(row, query)]
    last_sid, last_score = found[-1] if found else ("", 0)
    return rows, encode_cursor(last_score, last_sid) if len(found) == limit else None


def _matches(row: SessionRow, query: Mapping[str, Any]) -> bool:
    if query.get("cname") and row.cname != query["cname"]:
        return False
    since = query.get("since")
    return not (since and (row.last_seen_ms is None or row.last_seen_ms < since))


def row_document(row: SessionRow) -> dict[str, Any]:
    """A list's line about one session: the same fields as overview()."""
    return {
        "sid": row.sid, "cname": row.cname, "state": row.state,
        "last_seen_ms": row.last_seen_ms, "upload_status": row.upload_status,
        "upload_progress": row.upload_progress, "open_alerts": len(row.active_alerts),
        "console_test": row.console_test,
    }  # fmt: skip


def summary_document(summary: SessionSummary | None) -> dict[str, Any] | None:
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
        "upload_ok": summary.upload_ok, "upload_failures": summary.upload_failures,
        "files": [{"file_name": f.file_name, "track_type": f.track_type, "uid": f.uid,
                   "slice_start_ms": f.slice_start_ms} for f in summary.files],
        "max_sequence": summary.max_sequence, "sequence_gaps": summary.sequence_gaps,
    }  # fmt: skip
