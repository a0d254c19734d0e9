"""Taking in one callback: verify, load, store once, hand off. No Flask here.

The callback endpoint and the replay of a refused callback both go through accept(), so
a replayed body meets exactly the checks a fresh one does.
"""

from __future__ import annotations

from typing import NamedTuple

import orjson
from rq import Queue

from webhook.config import Settings
from webhook.errors import PayloadError
from webhook.events import Callback
from webhook.jobs import enqueue_callback
from webhook.metrics import STORE_SECONDS
from webhook.schemas import load_callback
from webhook.signature import verify
from webhook.store import CallbackStore, RecordResult


class Accepted(NamedTuple):
    callback: Callback
    result: RecordResult


def parse_json(body: bytes) -> object:
    """Raises:
    PayloadError: the body is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise PayloadError(f"the body is not valid JSON: {err.msg} at byte {err.pos}") from None


def accept(
    settings: Settings,
    store: CallbackStore,
    queue: Queue,
    body: bytes,
    *,
    signature_v2: str | None,
    signature_v1: str | None,
    received_ms: int,
) -> Accepted:
    """Verify, load and store one callback, and hand it off when it needs a follow-up.

    Raises:
        SignatureMissingError, SignatureError: not signed by any configured secret.
        PayloadError: not a callback we can file (not JSON, no ids).
        StoreUnavailableError: Redis did not confirm the write or the hand-off.
    """
    if not settings.accepts_unsigned:
        verify(
            body,
            signature_v2=signature_v2,
            signature_v1=signature_v1,
            secrets=settings.callback_secrets,
        )
    callback = load_callback(parse_json(body))
    with STORE_SECONDS.time():
        result = store.record(callback, body, received_ms=received_ms)
    if result.needs_handoff:
        enqueue_callback(queue, callback.sid, callback.notice_id, result.entry_id)
    return Accepted(callback, result)
