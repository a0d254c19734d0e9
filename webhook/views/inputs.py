"""What a request brings: its JSON body within the size limit, its query parameters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from flask import g, request
from marshmallow import Schema, ValidationError

from webhook.errors import (
    BodyTooLargeError,
    PayloadError,
    QueryError,
    UnsupportedMediaTypeError,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

_ENVIRON_CONTENT_TYPE = "CONTENT_TYPE"  # (not an environment variable: a WSGI key)
# The longest a client may pause while sending its body. Agora's bodies are a few KB, sent
# at once; it gives up on an answer after 10 s anyway.
BODY_READ_TIMEOUT_S = 3.0


def read_json_body(environ: WSGIEnvironment, max_bytes: int) -> bytes:
    """The raw body (signatures are over these exact bytes), within the size limit.

    What was read is left in g.body, at most max_bytes of it: the callback endpoint keeps
    a refused request's body for inspection and replay.

    Raises:
        UnsupportedMediaTypeError: not a JSON content type.
        BodyTooLargeError: over max_bytes, by its Content-Length or by what it sent.
        PayloadError: the server could not read the body (see read_at_most).
    """
    # A plain split, not werkzeug's full header parser: this runs on every callback.
    mimetype = environ.get(_ENVIRON_CONTENT_TYPE, "").partition(";")[0].strip().lower()
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaTypeError(
            f"Content-Type must be application/json, got {mimetype or 'none'!r}"
        )
    length = request.content_length
    if length is not None and length > max_bytes:
        raise BodyTooLargeError(f"the body is {length} bytes; the limit is {max_bytes}")
    g.body = b""  # what is kept if the read itself fails
    body = read_at_most(max_bytes + 1)
    g.body = body[:max_bytes]
    if len(body) > max_bytes:
        raise BodyTooLargeError(f"the body exceeds the limit of {max_bytes} bytes")
    return body


def read_at_most(limit: int) -> bytes:
    """Up to limit bytes of the body, as the server hands them over.

    Raises:
        PayloadError: the server could not read the body: a malformed chunked encoding,
            a client that stopped sending, or paused longer than BODY_READ_TIMEOUT_S
            (gunicorn: InvalidChunkSize, NoMoreData, TimeoutError...).
    """
    connection = request.environ.get("gunicorn.socket")
    if connection is not None:
        # gunicorn waits for a body as long as the client keeps the connection open, and a
        # few clients that never finish theirs would hold every thread while Agora's
        # callbacks wait. gunicorn sets the socket back to blocking for its next request.
        connection.settimeout(BODY_READ_TIMEOUT_S)
    try:
        return request.stream.read(limit)
    except Exception as err:  # noqa: BLE001  # the server's own errors: gunicorn's, werkzeug's
        raise PayloadError(
            f"the body could not be read: it is malformed or cut short ({type(err).__name__})"
        ) from None


def load_query(schema: Schema) -> dict[str, Any]:
    """The query string through schema.

    Raises:
        QueryError: a parameter failed its schema (named in the error's `errors`).
    """
    try:
        return cast(dict[str, Any], schema.load(request.args))
    except ValidationError as err:
        messages = err.normalized_messages()  # type: ignore[no-untyped-call]  # unannotated upstream
        raise QueryError("the query string failed validation", errors=messages) from None
