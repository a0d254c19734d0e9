"""POST /agora/callback under generated input: the real app, the real Redis.

Whatever arrives (bytes, JSON of any shape, wrong types in every envelope field, odd
headers, a valid signature over a mutated body), the answer is never a 5xx, always JSON
with a stable reason, and every refusal (400, 401, 413, 415) is kept in the rejected store
with its reason and counted in agora:stats and in the Prometheus counter.

ENDPOINT_FUZZ_PROFILE=endpoint-fuzz-long runs many more examples (minutes, not seconds).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from redis import Redis
from werkzeug.test import TestResponse

from tests.conftest import SECRET, example_files
from webhook.app import create_app
from webhook.config import Settings
from webhook.errors import WebhookError
from webhook.signature import HEADER_V1, HEADER_V2, sign
from webhook.store import CallbackStore, now_ms

_COMMON = {
    "deadline": None,
    # Redis is flushed by hand for every example; the fixtures are only connections.
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}
settings.register_profile("endpoint-fuzz", max_examples=100, **_COMMON)  # type: ignore[arg-type]  # hypothesis types the keyword arguments loosely
settings.register_profile("endpoint-fuzz-long", max_examples=2000, **_COMMON)  # type: ignore[arg-type]  # same
FUZZ = settings.get_profile(os.environ.get("ENDPOINT_FUZZ_PROFILE", "endpoint-fuzz"))

KEPT = {400, 401, 413, 415}
MAX_BODY = 4096


def reasons_of(cls: type[WebhookError]) -> Iterator[str]:
    yield cls.reason
    for sub in cls.__subclasses__():
        yield from reasons_of(sub)


# Every reason the endpoint may answer: ours, and werkzeug's HTTP errors as views/errors.py
# names them (405 on another method, 404 elsewhere; none is expected on this route).
REASONS = frozenset(reasons_of(WebhookError)) | {"bad_request", "method_not_allowed"}

EXAMPLES = {path.name.split("_")[0]: json.loads(path.read_text()) for path in example_files()}


def stamped(event_type: str) -> dict[str, Any]:
    """An example callback stamped now, as Agora stamps every attempt."""
    body: dict[str, Any] = json.loads(json.dumps(EXAMPLES[event_type]))
    body["notifyMs"] = now_ms()
    return body


@dataclass
class Endpoint:
    client: FlaskClient
    redis: Redis

    @property
    def store(self) -> CallbackStore:
        store: CallbackStore = self.client.application.extensions["agora.store"]
        return store

    def post(
        self,
        body: bytes,
        headers: dict[str, str],
        environ: dict[str, Any] | None = None,
    ) -> TestResponse:
        self.redis.flushall()
        before = _rejected_counts()
        response = self.client.post(
            "/agora/callback", data=body, headers=headers, environ_overrides=environ or {}
        )
        self.check(response, before)
        return response

    def check(self, response: TestResponse, rejected_before: dict[str, float]) -> None:
        assert response.status_code < 500, response.get_data()
        assert response.mimetype == "application/json"
        answer = json.loads(response.get_data())
        if response.status_code == 200:
            assert answer["result"] in ("stored", "duplicate")
            return
        assert answer["code"] == response.status_code
        assert answer["reason"] in REASONS, answer
        assert isinstance(answer["message"], str)
        assert "Traceback" not in answer["message"]
        reason = answer["reason"]
        if response.status_code in KEPT:
            (kept,) = self.store.rejected()
            assert (kept.reason, kept.status) == (reason, response.status_code)
            assert len(kept.body) <= MAX_BODY
            assert self.store.stats() == {f"rejected:{reason}": 1}
        assert _rejected_counts().get(reason, 0) == rejected_before.get(reason, 0) + 1


def _rejected_counts() -> dict[str, float]:
    counts: dict[str, float] = {}
    for family in REGISTRY.collect():
        if family.name == "agora_callbacks_rejected":
            for sample in family.samples:
                if sample.name == "agora_callbacks_rejected_total":
                    counts[sample.labels["reason"]] = sample.value
    return counts


@pytest.fixture
def endpoint(settings: Settings, redis: Redis) -> Endpoint:
    fuzzed = replace(
        settings,
        max_body_bytes=MAX_BODY,
        max_notify_age=timedelta(hours=1),
        bad_signature_limit=30,
    )
    return Endpoint(create_app(fuzzed).test_client(), redis)


def signed_headers(body: bytes, **extra: str) -> dict[str, str]:
    return {"Content-Type": "application/json", HEADER_V2: sign(body, SECRET)} | extra


# --- strategies ---------------------------------------------------------------------------

# Header values as a real server hands them over: latin-1 text without line breaks.
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=80,
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # beyond 64 bits too: orjson refuses those
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


def fresh_example() -> st.SearchStrategy[dict[str, Any]]:
    """One of Agora's example callbacks, stamped at the moment it is drawn."""
    return st.sampled_from(sorted(EXAMPLES)).map(stamped)


ENVELOPE_PATHS = [
    ("noticeId",), ("productId",), ("eventType",), ("notifyMs",), ("sid",), ("payload",),
    ("payload", "cname"), ("payload", "uid"), ("payload", "sid"), ("payload", "sequence"),
    ("payload", "sendts"), ("payload", "serviceType"), ("payload", "serviceScene"),
    ("payload", "details"), ("payload", "details", "msgName"),
    ("payload", "details", "progress"), ("payload", "details", "status"),
    ("payload", "details", "fileList"), ("payload", "details", "fileList", 0),
    ("payload", "details", "fileList", 0, "sliceStartTime"),
    ("payload", "details", "fileList", 0, "fileName"),
]  # fmt: skip


def put(body: Any, path: tuple[str | int, ...], value: Any, *, delete: bool) -> None:
    """Set (or delete) body at path, when every parent along it exists."""
    target = body
    for step in path[:-1]:
        if not _has(target, step):
            return
        target = target[step]
    last = path[-1]
    if isinstance(target, dict) or _has(target, last):
        if not delete:
            target[last] = value
        elif _has(target, last):
            del target[last]


def _has(container: Any, step: str | int) -> bool:
    if isinstance(container, dict):
        return step in container
    return isinstance(container, list) and isinstance(step, int) and step < len(container)


# --- the properties -----------------------------------------------------------------------


@FUZZ
@given(body=st.binary(max_size=600), signed=st.booleans())
@example(body=b"", signed=True)
@example(body=b"\xff\xfe{}", signed=True)
@example(body=b'{"a": 1e400}', signed=True)
@example(body=b"[" * 5000, signed=True)
@example(body=b"[" * 3000, signed=True)
def test_arbitrary_bytes(endpoint: Endpoint, body: bytes, signed: bool) -> None:
    headers = signed_headers(body) if signed else {"Content-Type": "application/json"}

    endpoint.post(body, headers)


@FUZZ
@given(document=json_values)
def test_arbitrary_json_signed(endpoint: Endpoint, document: Any) -> None:
    body = json.dumps(document).encode()

    endpoint.post(body, signed_headers(body))


@FUZZ
@given(
    base=fresh_example(),
    changes=st.lists(
        st.tuples(st.sampled_from(ENVELOPE_PATHS), json_values, st.booleans()),
        min_size=1,
        max_size=3,
    ),
)
# Found by this test: marshmallow keys a list item's errors by its index (an int), which
# orjson refused to write, so the store failed with a 500 (and Agora's retries ran out).
@example(base=stamped("31"), changes=[(("payload", "details", "fileList", 0), None, False)])
def test_wrong_types_in_every_envelope_field(
    endpoint: Endpoint, base: dict[str, Any], changes: list[tuple[Any, Any, bool]]
) -> None:
    for path, value, delete in changes:
        put(base, path, value, delete=delete)
    body = json.dumps(base).encode()

    response = endpoint.post(body, signed_headers(body))

    if response.get_json().get("result") == "stored":
        # Whatever was stored reads back: the event, and its session's summary.
        sid = base["payload"]["sid"]
        (event,) = endpoint.store.events(sid)
        assert event.body == body
        assert endpoint.store.session(sid) is not None


@FUZZ
@given(
    base=fresh_example(),
    content_type=st.one_of(
        st.sampled_from([
            "application/json", "application/json; charset=utf-8", "APPLICATION/JSON",
            "application/cloudevents+json", "text/plain", "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x", "", ";", "application/json;;;",
        ]),
        header_text,
    ),
    v2=st.none() | header_text | st.sampled_from(["sha256=", "0" * 64, "G" * 64]),
    v1=st.none() | header_text,
    content_length=st.none() | st.sampled_from(["0", "-1", "abc", "1e3", "99999999999999999999"])
    | st.integers(0, 10_000).map(str),
)  # fmt: skip
def test_random_headers(
    endpoint: Endpoint,
    base: dict[str, Any],
    content_type: str,
    v2: str | None,
    v1: str | None,
    content_length: str | None,
) -> None:
    body = json.dumps(base).encode()
    headers = {"Content-Type": content_type}
    if v2 is not None:
        headers[HEADER_V2] = v2
    if v1 is not None:
        headers[HEADER_V1] = v1
    environ = {} if content_length is None else {"CONTENT_LENGTH": content_length}

    endpoint.post(body, headers, environ)


@FUZZ
@given(
    base=fresh_example(),
    position=st.integers(0, 10_000),
    mutation=st.sampled_from(["flip", "insert", "delete", "append-space", "truncate"]),
    header=st.sampled_from([HEADER_V2, HEADER_V1]),
)
def test_a_valid_signature_over_a_mutated_body_is_refused(
    endpoint: Endpoint, base: dict[str, Any], position: int, mutation: str, header: str
) -> None:
    original = json.dumps(base).encode()
    mac = (
        sign(original, SECRET, "sha256") if header == HEADER_V2 else sign(original, SECRET, "sha1")
    )
    headers = {"Content-Type": "application/json", header: mac}
    at = position % len(original)
    mutated = {
        "flip": original[:at] + bytes([original[at] ^ 0x01]) + original[at + 1 :],
        "insert": original[:at] + b" " + original[at:],
        "delete": original[:at] + original[at + 1 :],
        "append-space": original + b" ",
        "truncate": original[:at],
    }[mutation]

    response = endpoint.post(mutated, headers)

    assert response.status_code == 401
    assert response.get_json()["reason"] == "signature_mismatch"
    assert endpoint.store.rejected()[0].body == mutated


@FUZZ
@given(base=fresh_example(), offset_s=st.integers(-30 * 24 * 3600, 30 * 24 * 3600))
def test_any_notify_ms_is_stored_or_refused_by_its_age(
    endpoint: Endpoint, base: dict[str, Any], offset_s: int
) -> None:
    base["notifyMs"] = now_ms() + offset_s * 1000
    body = json.dumps(base).encode()

    response = endpoint.post(body, signed_headers(body))

    if -3600 + 5 < offset_s < 300 - 5:  # inside the window, off the edges
        assert response.get_json() == {"result": "stored"}
    elif offset_s < -3600 - 5:
        assert response.get_json()["reason"] == "notify_ms_too_old"
    elif offset_s > 300 + 5:
        assert response.get_json()["reason"] == "notify_ms_in_future"


def test_a_file_list_entry_of_the_wrong_type_is_stored_flagged(endpoint: Endpoint) -> None:
    # The regression behind the @example above, spelled out.
    body = stamped("31")
    body["payload"]["details"]["fileList"][0] = None
    raw = json.dumps(body).encode()

    response = endpoint.post(raw, signed_headers(raw))

    assert response.get_json() == {"result": "stored"}
    (event,) = endpoint.store.events(body["payload"]["sid"])
    assert event.errors == {"payload": {"details": {"fileList": {"0": ["Field may not be null."]}}}}
