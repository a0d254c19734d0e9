"""Refused callbacks, kept so nothing is lost: GET /api/v1/rejected, POST .../<id>/replay.

Replay runs a kept body through the normal path again, with the signature headers it came
with, e.g. after the right secret was added to AGORA_CALLBACK_SECRETS.
"""

from __future__ import annotations

from flask import Blueprint
from flask.typing import ResponseReturnValue

from webhook.errors import (
    NotFoundError,
    NotReplayableError,
    ReplayRefusedError,
    StoreUnavailableError,
    WebhookError,
)
from webhook.extensions import current_settings, current_store
from webhook.intake import accept
from webhook.schemas import REJECTED_QUERY_SCHEMA
from webhook.signature import HEADER_V1, HEADER_V2
from webhook.store import Rejection, now_ms
from webhook.views.auth import require_token
from webhook.views.inputs import load_query

bp = Blueprint("rejected", __name__, url_prefix="/api/v1/rejected")
bp.before_request(require_token)


@bp.get("")
def list_rejected() -> ResponseReturnValue:
    """The most recent refused requests, newest first."""
    query = load_query(REJECTED_QUERY_SCHEMA)
    return {"rejected": [_document(r) for r in current_store().rejected(count=query["limit"])]}


@bp.post("/<entry_id>/replay")
def replay(entry_id: str) -> ResponseReturnValue:
    """Take a kept request in again; stored once whatever the number of replays."""
    kept = current_store().rejected_entry(entry_id)
    if kept is None:
        raise NotFoundError(f"no refused request {entry_id!r}")
    if kept.body_truncated:
        raise NotReplayableError("the kept body was truncated at the size limit")
    try:
        _, result = accept(
            current_settings(),
            current_store(),
            kept.body,
            signature_v2=kept.headers.get(HEADER_V2),
            signature_v1=kept.headers.get(HEADER_V1),
            received_ms=now_ms(),
        )
    except StoreUnavailableError:
        raise  # the replay call's own 503: try again
    except WebhookError as err:
        raise ReplayRefusedError(err) from None
    return {"id": entry_id, "result": "duplicate" if result.outcome != "stored" else "stored"}


def _document(rejection: Rejection) -> dict[str, object]:
    return {
        "id": rejection.entry_id,
        "reason": rejection.reason,
        "status": rejection.status,
        "message": rejection.message,
        "received_ms": rejection.received_ms,
        "remote_addr": rejection.remote_addr,
        "headers": dict(rejection.headers),
        "body_truncated": rejection.body_truncated,
        "body_bytes": len(rejection.body),
        "body": rejection.body.decode("utf-8", errors="replace"),
    }
