"""The failures we report, each with an HTTP status and a stable reason code.

The same reason code goes to the JSON error body, the logs, the counters and the rejected
store, so an operator can follow one refused callback everywhere. No Flask import here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class WebhookError(Exception):
    """Base for every failure we report; carries an HTTP status and a stable reason code."""

    status: ClassVar[int] = 500
    reason: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, errors: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = dict(errors or {})


class ConfigError(WebhookError):
    """The environment does not describe a service we can run."""

    reason = "invalid_configuration"


class SignatureMissingError(WebhookError):
    status = 401
    reason = "signature_missing"


class SignatureError(WebhookError):
    status = 401
    reason = "signature_mismatch"


class AuthenticationError(WebhookError):
    """An API call without a valid bearer token."""

    status = 401
    reason = "unauthorized"


class NotFoundError(WebhookError):
    status = 404
    reason = "not_found"


class NotReplayableError(WebhookError):
    """A kept request that cannot go through the callback path again as it is."""

    status = 409
    reason = "not_replayable"


class ReplayRefusedError(WebhookError):
    """A kept request the callback path refused again (its own reason in `errors`): not a
    401 or 400 of the replay call itself, which an operator's client would take for its own."""

    status = 422
    reason = "replay_refused"

    def __init__(self, refusal: WebhookError) -> None:
        super().__init__(
            f"the kept callback was refused again: {refusal.message}",
            errors={"callback": {"status": refusal.status, "reason": refusal.reason}},
        )


class PayloadError(WebhookError):
    """The body is not a callback we can file under a session (not JSON, no ids)."""

    status = 400
    reason = "invalid_payload"


class QueryError(WebhookError):
    """A query parameter failed its schema."""

    status = 400
    reason = "invalid_query"


class NotifyTooOldError(WebhookError):
    """A signed callback whose notifyMs is older than AGORA_MAX_NOTIFY_AGE_SECONDS: Agora
    stamps every attempt afresh, so this is a replay (or a clock far off)."""

    status = 400
    reason = "notify_ms_too_old"


class NotifyInFutureError(WebhookError):
    """notifyMs further ahead of our clock than AGORA_NOTIFY_CLOCK_SKEW_SECONDS."""

    status = 400
    reason = "notify_ms_in_future"


class RateLimitedError(WebhookError):
    """Too many requests from one address failed verification within the window."""

    status = 429
    reason = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BodyTooLargeError(WebhookError):
    status = 413
    reason = "body_too_large"


class UnsupportedMediaTypeError(WebhookError):
    status = 415
    reason = "unsupported_media_type"


class StoreUnavailableError(WebhookError):
    """Redis did not confirm the write: 503 makes Agora retry instead of losing the event."""

    status = 503
    reason = "store_unavailable"
