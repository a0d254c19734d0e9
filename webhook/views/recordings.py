"""The app's calls, forwarded by app servers: POST /api/v1/recordings and .../stop.

Agora's own vocabulary, so an app server forwards what it already has. Both are
idempotent: a repeat changes nothing and answers 200.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, request
from flask.typing import ResponseReturnValue

from webhook.agora_client import StopResult, redact
from webhook.errors import NotFoundError, PayloadError
from webhook.extensions import (
    current_queue,
    current_recordings,
    current_settings,
    current_store,
)
from webhook.jobs import enqueue_reconcile
from webhook.recordings import StartCall, StopCall
from webhook.schemas import RECORDING_START_SCHEMA, RECORDING_STOP_SCHEMA
from webhook.store import now_ms
from webhook.views.auth import require_token
from webhook.views.inputs import read_json_body

bp = Blueprint("recordings", __name__, url_prefix="/api/v1/recordings")
bp.before_request(require_token)


def _json_body() -> dict[str, Any]:
    """The body, within the callback's size limit. The standard library's parser, not
    orjson's: it keeps an integer beyond 64 bits exact (orjson makes it a float), so
    JsonObject can refuse it; a body nested past the stack is a 400, not a 500."""
    raw = read_json_body(request.environ, current_settings().max_body_bytes)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as err:
        raise PayloadError(f"the body is not JSON we can read: {err}") from None
    if not isinstance(body, dict):
        raise PayloadError("the body must be a JSON object")
    return body


@bp.post("")
def start_recording() -> ResponseReturnValue:
    """The app started a recording: remember where its files go and what to expect."""
    data = RECORDING_START_SCHEMA.load(_json_body())
    start = StartCall(
        resource_id=data["resource_id"],
        cname=data["cname"],
        uid=data["uid"],
        mode=data["mode"],
        client_request=redact(data["client_request"]),
        started_ms=now_ms(),
    )
    created = current_recordings().record_start(data["sid"], start)
    current_store().note_activity(data["sid"], start.cname, start.started_ms)
    if created:
        enqueue_reconcile(current_queue(), data["sid"])
    answer = {"sid": data["sid"], "result": "recorded" if created else "unchanged"}
    return answer, 201 if created else 200


@bp.post("/<sid>/stop")
def stop_recording(sid: str) -> ResponseReturnValue:
    """The app stopped a recording: what Agora answered decides what we wait for."""
    data = RECORDING_STOP_SCHEMA.load(_json_body())
    recordings = current_recordings()
    facts = recordings.facts(sid)
    if facts.start is None:
        raise NotFoundError(f"no recording {sid!r}: forward its start first")
    # The same reading of Agora's answer as our own client's (fileList string or list,
    # web mode, the legacy "unknow").
    answer = StopResult.from_response(data["http_status"], data["response"])
    stop = StopCall(
        http_status=answer.http_status,
        code=answer.code,
        uploading_status=answer.uploading_status,
        file_names=answer.file_list,
        response=redact(data["response"]),
        stopped_ms=now_ms(),
    )
    recorded = recordings.record_stop(sid, stop)
    current_store().note_activity(sid, facts.start.cname, stop.stopped_ms)
    if recorded:
        enqueue_reconcile(current_queue(), sid)
    return {"sid": sid, "result": "recorded" if recorded else "unchanged"}, 200
