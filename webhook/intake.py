"""Taking in one callback: verify, load, store once (hand-off included). No Flask here.

The callback endpoint and the replay of a refused callback both go through accept(), so
a replayed body meets the checks a fresh one does, all but one: the age of notifyMs, which
says whether the body was fresh when it reached us, is checked only for what arrives at
the endpoint (see accept()).
"""

from __future__ import annotations

from datetime import timedelta
from typing import NamedTuple

import orjson

from webhook.config import Settings
from webhook.errors import NotifyInFutureError, NotifyTooOldError, PayloadError
from webhook.events import Callback
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


def ensure_fresh(
    notify_ms: int | None, *, received_ms: int, max_age: timedelta, skew: timedelta
) -> None:
    """Refuse a notifyMs outside [received - max_age, received + skew].

    Agora stamps notifyMs on every delivery attempt and signs it with the body, so a stale
    one is a replay (or a clock far off). A callback without an integer notifyMs cannot be
    judged and passes: Agora always sends one, so only Agora could have signed such a body,
    and its noticeId dedupe still holds.

    Raises:
        NotifyTooOldError, NotifyInFutureError: outside the window.
    """
    if notify_ms is None:
        return
    age_ms = received_ms - notify_ms
    if age_ms > max_age.total_seconds() * 1000:
        raise NotifyTooOldError(
            f"notifyMs is {age_ms // 1000} s old; callbacks older than "
            f"{max_age.total_seconds():g} s are refused as replays"
        )
    if -age_ms > skew.total_seconds() * 1000:
        raise NotifyInFutureError(
            f"notifyMs is {-age_ms // 1000} s ahead of our clock; at most "
            f"{skew.total_seconds():g} s is tolerated"
        )


def accept(
    settings: Settings,
    store: CallbackStore,
    body: bytes,
    *,
    signature_v2: str | None,
    signature_v1: str | None,
    received_ms: int,
    check_notify_age: bool = False,
) -> Accepted:
    """Verify, load and store one callback; a follow-up event is handed off in the same
    write (the workers' relay enqueues its job), so nothing here waits for RQ.

    check_notify_age: refuse a callback whose notifyMs is outside the accepted window around
    received_ms (when settings.max_notify_age is set). The endpoint asks for it. An
    operator's replay of a kept request does not: that body reached us once already, maybe
    days ago, and was refused for another reason (often a secret not yet configured); the
    noticeId dedupe still applies to it.

    Raises:
        SignatureMissingError, SignatureError: not signed by any configured secret.
        PayloadError: not a callback we can file (not JSON, no ids).
        NotifyTooOldError, NotifyInFutureError: a signed callback outside the age window.
        StoreUnavailableError: Redis did not confirm the write.
    """
    if not settings.accepts_unsigned:
        verify(
            body,
            signature_v2=signature_v2,
            signature_v1=signature_v1,
            secrets=settings.callback_secrets,
        )
    callback = load_callback(parse_json(body))
    # Unsigned callbacks (development only) carry whatever notifyMs the sender wrote, so
    # their age proves nothing.
    if check_notify_age and settings.max_notify_age is not None and not settings.accepts_unsigned:
        ensure_fresh(
            callback.notify_ms,
            received_ms=received_ms,
            max_age=settings.max_notify_age,
            skew=settings.notify_clock_skew,
        )
    with STORE_SECONDS.time():
        result = store.record(callback, body, received_ms=received_ms)
    return Accepted(callback, result)
