"""The OpenAPI document of the HTTP API, generated from the marshmallow schemas (apispec)."""

from __future__ import annotations

import functools
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from webhook.schemas import (
    AlertQuerySchema,
    RecordingListQuerySchema,
    RecordingStartSchema,
    RecordingStopSchema,
    RejectedQuerySchema,
)

ERROR = {"$ref": "#/components/schemas/Error"}
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


def _answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    content = {"application/json": {"schema": schema or {"type": "object"}}}
    return {"description": description, "content": content}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): _answer("error", ERROR) for code in codes}


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


@functools.cache
def openapi_document() -> dict[str, Any]:
    """Built once per process: the API does not change at run time."""
    spec = APISpec(
        title="Agora Cloud Recording callback service",
        version="1",
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.components.schema("Error", {"type": "object", "properties": {
        "code": {"type": "integer"}, "status": {"type": "string"},
        "reason": {"type": "string"}, "message": {"type": "string"},
        "errors": {"type": "object"},
    }, "required": ["code", "status", "reason", "message"]})  # fmt: skip
    for schema in (RecordingStartSchema, RecordingStopSchema):
        spec.components.schema(schema.__name__.removesuffix("Schema"), schema=schema)

    spec.path("/agora/callback", operations={"post": {
        "summary": "Agora's notification (signed with Agora-Signature-V2)",
        "requestBody": {"required": True,
                        "content": {"application/json": {"schema": {"type": "object"}}}},
        "parameters": [{"name": "Agora-Signature-V2", "in": "header",
                        "schema": {"type": "string"}}],
        "responses": {"200": _answer("stored or duplicate"), **_errors(400, 401, 413, 415, 503)},
    }})  # fmt: skip
    spec.path("/api/v1/recordings", operations={
        "get": {"summary": "Sessions by last activity", "security": BEARER,
                "parameters": [{"in": "query", "schema": RecordingListQuerySchema}],
                "responses": {"200": _answer("a page of sessions"), **_errors(400, 401, 503)}},
        "post": {"summary": "The app's start call", "security": BEARER,
                 "requestBody": {"required": True, "content": {"application/json": {
                     "schema": "RecordingStart"}}},
                 "responses": {"201": _answer("recorded"), "200": _answer("unchanged"),
                               **_errors(400, 401, 413, 415, 503)}},
    })  # fmt: skip
    spec.path("/api/v1/recordings/{sid}", parameters=[_path_param("sid")], operations={
        "get": {"summary": "One session", "security": BEARER,
                "responses": {"200": _answer("the session"), **_errors(401, 404, 503)}},
    })  # fmt: skip
    spec.path("/api/v1/recordings/{sid}/events", parameters=[_path_param("sid")], operations={
        "get": {"summary": "The session's timeline", "security": BEARER,
                "responses": {"200": _answer("the timeline"), **_errors(401, 404, 503)}},
    })  # fmt: skip
    spec.path("/api/v1/recordings/{sid}/stop", parameters=[_path_param("sid")], operations={
        "post": {"summary": "What Agora answered the app's stop", "security": BEARER,
                 "requestBody": {"required": True, "content": {"application/json": {
                     "schema": "RecordingStop"}}},
                 "responses": {"200": _answer("recorded or unchanged"),
                               **_errors(400, 401, 404, 413, 415, 503)}},
    })  # fmt: skip
    spec.path("/api/v1/alerts", operations={
        "get": {"summary": "Alerts by state and kind", "security": BEARER,
                "parameters": [{"in": "query", "schema": AlertQuerySchema}],
                "responses": {"200": _answer("alerts"), **_errors(400, 401, 503)}},
    })  # fmt: skip
    spec.path("/api/v1/alerts/{alert_id}/ack", parameters=[_path_param("alert_id")], operations={
        "post": {"summary": "Acknowledge an alert", "security": BEARER,
                 "responses": {"200": _answer("the alert"), **_errors(401, 404, 503)}},
    })  # fmt: skip
    spec.path("/api/v1/rejected", operations={
        "get": {"summary": "Refused callbacks", "security": BEARER,
                "parameters": [{"in": "query", "schema": RejectedQuerySchema}],
                "responses": {"200": _answer("refused callbacks"), **_errors(400, 401, 503)}},
    })  # fmt: skip
    spec.path("/api/v1/rejected/{entry_id}/replay", parameters=[_path_param("entry_id")],
              operations={"post": {
                  "summary": "Take a refused callback in again", "security": BEARER,
                  "responses": {"200": _answer("stored or duplicate"),
                                **_errors(401, 404, 409, 422, 503)}}})  # fmt: skip
    spec.path("/healthz", operations={"get": {"responses": {"200": _answer("up")}}})
    spec.path("/readyz", operations={"get": {"responses": {
        "200": _answer("ready"),
        "503": _answer("Redis unreachable, loading or refusing writes")}}})  # fmt: skip
    document: dict[str, Any] = spec.to_dict()
    return document
