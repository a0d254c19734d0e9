"""The one place exceptions become JSON responses. Never a stack trace in a body."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import orjson
from flask import Flask, Response
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from webhook.errors import PayloadError, WebhookError

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
    app.register_error_handler(Exception, handle_unexpected)
