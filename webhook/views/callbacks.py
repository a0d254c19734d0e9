"""POST /agora/callback: verify, load, store once, answer. Thin on purpose."""

from __future__ import annotations

import logging

import orjson
from flask import Blueprint, Response, current_app, g, request
from flask.typing import ResponseReturnValue

from webhook.errors import (
    BodyTooLargeError,
    NotifyInFutureError,
    NotifyTooOldError,
    PayloadError,
    RateLimitedError,
    SignatureError,
    SignatureMissingError,
    StoreUnavailableError,
    UnsupportedMediaTypeError,
    WebhookError,
)
from webhook.extensions import current_settings, current_store
from webhook.intake import accept
from webhook.metrics import ACK_SECONDS, CALLBACKS, REJECTED
from webhook.signature import HEADER_V1, HEADER_V2
from webhook.store import RecordResult, Rejection, now_ms
from webhook.store.ratelimit import RefusalLimiter
from webhook.views.errors import error_response
from webhook.views.inputs import read_at_most, read_json_body

logger = logging.getLogger(__name__)

bp = Blueprint("callbacks", __name__)

# Answers are constant: build them once, not per callback.
_ANSWERS = {
    "stored": b'{"result":"stored"}',
    "duplicate": b'{"result":"duplicate"}',
}
# Refusals worth keeping for an operator; a 405 or 404 is not a callback attempt.
_KEPT_STATUSES = frozenset({400, 401, 413, 415})
# Headers kept with a refused request so it can be replayed; Agora's signatures are MACs
# of the body, not secrets.
_KEPT_HEADERS = ("Content-Type", "User-Agent", HEADER_V2, HEADER_V1)
# Refusals counted per client address: requests that did not prove they come from Agora
# (no or wrong signature; refused before the signature could be checked), and signed ones
# whose notifyMs is stale, i.e. replays. Anyone can send these in bulk, and without a
# limit they would push real evidence out of the capped rejected store. A refusal of a
# verified, fresh callback (e.g. 400 for a body without noticeId) is never limited.
_COUNTED_PER_CLIENT = (
    SignatureMissingError,
    SignatureError,
    BodyTooLargeError,
    UnsupportedMediaTypeError,
    NotifyTooOldError,
    NotifyInFutureError,
)
_LIMITER = "agora.refusal_limiter"
# Where WSGI puts the signature headers (PEP 3333: HTTP_ + upper case, "-" -> "_").
_ENVIRON_V2 = "HTTP_" + HEADER_V2.upper().replace("-", "_")
_ENVIRON_V1 = "HTTP_" + HEADER_V1.upper().replace("-", "_")


@bp.post("/agora/callback")
def receive_callback() -> ResponseReturnValue:
    """Agora's notification: 200 only once Redis has confirmed the write."""
    g.received_ms = received_ms = now_ms()
    settings = current_settings()
    # Headers straight from the WSGI environ: werkzeug's header view rebuilds each name,
    # and this runs on every callback.
    environ = request.environ
    body = read_json_body(environ, settings.max_body_bytes)
    callback, result = accept(
        settings,
        current_store(),
        body,
        signature_v2=environ.get(_ENVIRON_V2),
        signature_v1=environ.get(_ENVIRON_V1),
        received_ms=received_ms,
        check_notify_age=True,
    )
    latency_ms = now_ms() - received_ms
    event_label = str(callback.event_type) if callback.is_known_type else "unknown"
    CALLBACKS.labels(event_label, result.outcome).inc()
    ACK_SECONDS.observe(latency_ms / 1000)
    # A line per routine callback costs about as much CPU as its Redis write (measured);
    # the metrics above and the session's event log already record every one. The
    # Console's test callbacks are logged: whoever clicked Check can see they arrived.
    notable = (
        result.outcome != "stored"
        or not callback.is_valid
        or not callback.is_known_type
        or callback.is_console_test
    )
    if notable or settings.log_callbacks == "all":
        logger.info(
            "callback %s",
            result.outcome,
            extra={
                "sid": callback.sid,
                "notice_id": callback.notice_id,
                "event_type": callback.event_type,
                "outcome": result.outcome,
                "valid": callback.is_valid,
                "console_test": callback.is_console_test,
                "latency_ms": latency_ms,
            },
        )
    return _answer(result)


def _answer(result: RecordResult) -> Response:
    if result.outcome == "redundant":
        # Agora's redundant copy of an event we have: kept, flagged, not counted twice.
        body = orjson.dumps({"result": "duplicate", "duplicate_of": result.duplicate_of})
    else:
        body = _ANSWERS[result.outcome]
    return Response(body, status=200, mimetype="application/json")


@bp.errorhandler(WebhookError)
def keep_refused_callback(err: WebhookError) -> ResponseReturnValue:
    """Every refused callback is kept (bounded) with its reason, so nothing is lost; a
    client over the limit of unverified requests gets 429 and only a sample is kept."""
    keep = err.status in _KEPT_STATUSES
    if isinstance(err, _COUNTED_PER_CLIENT):
        err, keep = _count_per_client(err)
    REJECTED.labels(err.reason).inc()
    if keep:
        _keep_rejected(err)
    elif err.status >= 500:
        logger.error("callback not stored: %s", err.reason, exc_info=err.__cause__ is not None)
    response = error_response(err)
    if isinstance(err, RateLimitedError):
        response.headers["Retry-After"] = str(err.retry_after_s)
    return response


def _count_per_client(err: WebhookError) -> tuple[WebhookError, bool]:
    """The refusal to answer (err, or 429 over the limit) and whether to keep the request.

    Only reached once verification has failed: a validly signed callback never costs this
    round trip, and is never limited."""
    settings = current_settings()
    if not settings.bad_signature_limit:
        return err, True
    try:
        verdict = _limiter().hit(request.remote_addr, received_ms=g.get("received_ms") or now_ms())
    except StoreUnavailableError:
        # Fail open: the caller gets the real reason. Redis is down, so keeping would fail too.
        logger.error("refused request neither counted nor kept: the store is unavailable")
        return err, False
    if not verdict.limited:
        return err, True
    limited = RateLimitedError(
        f"{verdict.count} requests from this address failed verification within "
        f"{settings.bad_signature_window.total_seconds():g} s (this one: {err.reason}); "
        f"retry after {verdict.retry_after_s} s",
        retry_after_s=verdict.retry_after_s,
    )
    return limited, verdict.keep


def _limiter() -> RefusalLimiter:
    """One per app, built on first use (only refusals need it) on the store's connection."""
    extensions = current_app.extensions
    limiter: RefusalLimiter | None = extensions.get(_LIMITER)
    if limiter is None:
        settings = current_settings()
        limiter = RefusalLimiter(
            current_store().redis,
            limit=settings.bad_signature_limit,
            window=settings.bad_signature_window,
        )
        extensions[_LIMITER] = limiter
    return limiter


def _keep_rejected(err: WebhookError) -> None:
    settings = current_settings()
    body = g.get("body")
    if body is None:
        # Refused before the body was read (415, or 413 by Content-Length): keep its start.
        try:
            body = read_at_most(settings.max_body_bytes + 1)
        except PayloadError:
            body = b""  # unreadable too: the reason and the headers are still kept
    truncated = len(body) > settings.max_body_bytes or (
        request.content_length is not None and request.content_length > settings.max_body_bytes
    )
    rejection = Rejection(
        reason=err.reason,
        status=err.status,
        message=err.message,
        received_ms=g.get("received_ms") or now_ms(),
        remote_addr=request.remote_addr,
        body=body[: settings.max_body_bytes],
        body_truncated=truncated,
        headers={h: request.headers[h] for h in _KEPT_HEADERS if h in request.headers},
    )
    extra: dict[str, object] = {
        "reason": err.reason, "status": err.status, "remote_addr": request.remote_addr,
    }  # fmt: skip
    try:
        # rejected_id: what `agora-webhook replay-rejected` and /api/v1/rejected/<id>/replay take.
        extra["rejected_id"] = current_store().record_rejected(rejection)
    except StoreUnavailableError:
        # The caller still gets the real reason; Agora retries any non-200 anyway.
        logger.warning("callback refused: %s", err.reason, extra=extra)
        logger.error("refused callback could not be kept: the store is unavailable")
        return
    logger.warning("callback refused: %s (kept as %s)", err.reason, extra["rejected_id"],
                   extra=extra)  # fmt: skip
