"""The one place exceptions become JSON responses. Never a stack trace in a body."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import orjson
from flask import Flask, Response
from marshmallow import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from werkzeug.exceptions import HTTPException

from webhook.errors import PayloadError, StoreUnavailableError, WebhookError

logger = logging.getLogger(__name__)


def _json(code: int, reason: str, message: str, errors: Any = None) -> Response:
    body: dict[str, Any] = {
        "code": code,
        "status": HTTPStatus(code).phrase,
        "reason": reason,
        "message": message,
    }
    if errors:
        body["errors"] = errors
    response = Response(status=code, mimetype="application/json")
    response.set_data(orjson.dumps(body))
    if code == HTTPStatus.SERVICE_UNAVAILABLE:
        response.headers["Retry-After"] = "1"
    return response


def error_response(err: WebhookError) -> Response:
    return _json(err.status, err.reason, err.message, err.errors)


def handle_webhook_error(err: WebhookError) -> Response:
    if err.status >= 500:
        logger.error("%s: %s", err.reason, err.message, exc_info=err.__cause__ is not None)
    return error_response(err)


def handle_validation_error(err: ValidationError) -> Response:
    messages = err.normalized_messages()  # type: ignore[no-untyped-call]  # unannotated upstream
    return error_response(PayloadError("the body failed validation", errors=messages))


def store_error(err: RedisError) -> StoreUnavailableError:
    """Redis failing a read or a write outside the callback's own store call (the read
    API, the app servers' start/stop reports, the dashboard): a 503 the caller can retry,
    as for the callback, never a 500."""
    if isinstance(err, RedisConnectionError | RedisTimeoutError):
        return StoreUnavailableError("the store is unreachable; retry later")
    # e.g. OOM under noeviction, a replica that refuses writes, a cluster moving slots.
    return StoreUnavailableError("the store refused the request; retry later")


def handle_store_error(err: RedisError) -> Response:
    # redis-py's messages name the host and port, never the URL's password.
    logger.error("store_unavailable: %s: %s", type(err).__name__, err)
    return error_response(store_error(err))


def handle_http_exception(err: HTTPException) -> Response:
    code = err.code or 500
    reason = (err.name or "error").lower().replace(" ", "_")
    response = _json(code, reason, err.description or HTTPStatus(code).description)
    if code == HTTPStatus.METHOD_NOT_ALLOWED:
        allowed = err.get_response().headers.get("Allow")
        if allowed:
            response.headers["Allow"] = allowed
    return response


def handle_unexpected(err: Exception) -> Response:
    logger.exception("unhandled error")
    return _json(500, "internal_error", "an internal error occurred; it has been logged")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(WebhookError, handle_webhook_error)
    app.register_error_handler(ValidationError, handle_validation_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(RedisError, handle_store_error)
    app.register_error_handler(Exception, handle_unexpected)
