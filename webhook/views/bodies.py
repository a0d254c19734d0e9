"""Reading a JSON request body within the size limit, for every endpoint that takes one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import g, request

from webhook.errors import BodyTooLargeError, UnsupportedMediaTypeError

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

_ENVIRON_CONTENT_TYPE = "CONTENT_TYPE"  # (not an environment variable: a WSGI key)


def read_json_body(environ: WSGIEnvironment, max_bytes: int) -> bytes:
    """The raw body (signatures are over these exact bytes), within the size limit.

    What was read is left in g.body, at most max_bytes of it: the callback endpoint keeps
    a refused request's body for inspection and replay.

    Raises:
        UnsupportedMediaTypeError: not a JSON content type.
        BodyTooLargeError: over max_bytes, by its Content-Length or by what it sent.
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
    body = request.stream.read(max_bytes + 1)
    g.body = body[:max_bytes]
    if len(body) > max_bytes:
        raise BodyTooLargeError(f"the body exceeds the limit of {max_bytes} bytes")
    return body
