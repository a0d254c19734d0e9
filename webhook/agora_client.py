"""Client for Agora's Cloud Recording REST API: typed answers, typed errors, safe retries.

It owns the HTTP exchange with Agora (FACTS.md section 6) and nothing else: no Flask, no Redis.
Credentials live only in the requests auth object; CallRecords, logs and errors never see them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Literal, get_args
from urllib.parse import quote

import requests
from requests.auth import HTTPBasicAuth

logger = logging.getLogger(__name__)

Mode = Literal["individual", "mix", "web"]
Endpoint = Literal["acquire", "start", "query", "update", "update_layout", "stop"]
UploadingStatus = Literal["uploaded", "backuped", "unknown"]

MODES: Final[frozenset[str]] = frozenset(get_args(Mode))

# Keys dropped wherever they appear in a request or response summary (compared lower-cased).
SECRET_KEYS: Final[frozenset[str]] = frozenset(
    {"accesskey", "secretkey", "ststoken", "token", "secret", "salt"}
)
# The only storageConfig fields worth keeping: where the files go, never how to get in.
STORAGE_KEPT_KEYS: Final = ("vendor", "region", "bucket", "fileNamePrefix")
RESPONSE_TEXT_LIMIT: Final = 1000
# A synchronous stop answers only once the upload is done, which Agora expects within 20 s:
# reading it with the ordinary timeout would turn a slow success into a retried stop (-> 49).
SYNC_STOP_READ_TIMEOUT_S: Final = 30.0
RETRY_AFTER_CAP_S: Final = 60.0

CODE_INVALID_PARAMETERS: Final = 2
CODE_INVALID_OPERATION: Final = 49
CODE_TASK_CONFLICT: Final = 53
CODE_REQUEST_NOT_COMPLETED: Final = 65
CODE_NO_RECORDED_DATA: Final = 435

# Query's serverResponse.status values Agora reads as "the recording started fine".
STARTED_STATUSES: Final[frozenset[int]] = frozenset({4, 5})


class AgoraError(Exception):
    """Base for every failed Cloud Recording call: our stable reason plus Agora's answer.

    `code` is Agora's numeric code when the body had one; `detail` is Agora's own reason or
    message text; `body` is the response JSON (or truncated text) with secrets removed.
    """

    reason: ClassVar[str] = "agora_error"

    def __init__(
        self,
        message: str,
        *,
        endpoint: Endpoint,
        http_status: int | None = None,
        code: int | None = None,
        detail: str | None = None,
        body: Any = None,
        attempt: int = 1,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.endpoint = endpoint
        self.http_status = http_status
        self.code = code
        self.detail = detail
        self.body = body
        self.attempt = attempt


class AgoraConnectionError(AgoraError):
    """No HTTP answer: connection refused or reset, or the timeout passed."""

    reason = "agora_unreachable"


class AgoraAuthError(AgoraError):
    reason = "agora_unauthorized"


class AgoraRateLimitedError(AgoraError):
    """429: the App ID's QPS limit; `retry_after_s` is Agora's Retry-After when it sent one."""

    reason = "agora_rate_limited"

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after_s = retry_after_s


class AgoraNotFoundError(AgoraError):
    """404 "failed to find worker": the task is gone, or an HA migration is under way (< 90 s)."""

    reason = "agora_worker_not_found"


class AlreadyStartedError(AgoraError):
    """start answered 201 code 7: this resource ID already started a recording.

    When `attempt` > 1 it is probably our own earlier attempt that started it; `sid` holds the
    recording ID if Agora's body carried one (it usually does not: look for it in callbacks).
    """

    reason = "agora_already_started"

    def __init__(self, message: str, *, sid: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.sid = sid


class TaskConflictError(AgoraError):
    """start answered 400 code 53: the same cname + uid is already recording."""

    reason = "agora_task_conflict"


class InvalidOperationError(AgoraError):
    """stop answered 400 code 49: the task is already exiting (second stop, idle exit, kicked)."""

    reason = "agora_invalid_operation"


class RequestNotCompletedError(AgoraError):
    """206 code 65: the request reached Agora but its answer timed out."""

    reason = "agora_request_not_completed"


class AgoraServerError(AgoraError):
    """5xx, including 504 code 62 (request timeout) and 500 code 502 (no worker)."""

    reason = "agora_server_error"


class InvalidParametersError(AgoraError):
    """400 code 2: Agora refused the request body."""

    reason = "agora_invalid_parameters"


# The errors worth another attempt, per endpoint. acquire has no documented 206/65; stop's
# other 206s (435 nothing recorded, legacy readings) are answers and never reach this table.
RETRIED_ERRORS: Final[dict[Endpoint, tuple[type[AgoraError], ...]]] = {
    "acquire": (AgoraConnectionError, AgoraServerError, AgoraRateLimitedError),
    **{
        endpoint: (
            AgoraConnectionError,
            AgoraServerError,
            AgoraRateLimitedError,
            RequestNotCompletedError,
        )
        for endpoint in ("start", "query", "update", "update_layout", "stop")
    },
}


@dataclass(frozen=True)
class CallRecord:
    """One HTTP exchange with Agora, safe to store or log: no credentials, no storage keys.

    `http_status` is None when no answer came back; `error` then names the transport failure.
    """

    endpoint: Endpoint
    method: str
    path: str
    resource_id: str | None
    sid: str | None
    request: Mapping[str, Any] | None
    http_status: int | None
    response: Any
    duration_ms: float
    attempt: int
    error: str | None = None


@dataclass(frozen=True)
class QueryResult:
    """query's answer: the service status code (section 3 of FACTS.md) and the files so far."""

    status: int | None
    file_list: tuple[str, ...]
    raw: Mapping[str, Any] = field(repr=False)

    @property
    def is_started(self) -> bool:
        return self.status in STARTED_STATUSES

    @classmethod
    def from_response(cls, body: Mapping[str, Any]) -> QueryResult:
        server = _mapping(body.get("serverResponse"))
        return cls(
            status=_int_or_none(server.get("status")),
            file_list=file_names(server),
            raw=body,
        )


@dataclass(frozen=True)
class StopResult:
    """stop's answer, whichever of its documented shapes Agora used.

    http_status 200: stopped; uploading_status says where the files went.
    http_status 206, code 435: nothing was recorded (nobody published); not an error.
    http_status 206, code 65: still "request not completed" after every retry. The task was
    probably told to stop; its upload status is unknown, so callbacks and storage decide.
    http_status 206, any other code: the legacy readings (some files went to Agora Cloud
    Backup, or the recording is not over yet); uploading_status says what Agora reported.
    """

    http_status: int
    code: int | None
    uploading_status: UploadingStatus
    file_list: tuple[str, ...]
    raw: Mapping[str, Any] = field(repr=False)

    @property
    def has_no_recorded_data(self) -> bool:
        return self.http_status == 206 and self.code == CODE_NO_RECORDED_DATA

    @property
    def is_request_not_completed(self) -> bool:
        return self.http_status == 206 and self.code == CODE_REQUEST_NOT_COMPLETED

    @classmethod
    def from_response(cls, http_status: int, body: Mapping[str, Any]) -> StopResult:
        server = _mapping(body.get("serverResponse"))
        return cls(
            http_status=http_status,
            code=_int_or_none(body.get("code")),
            uploading_status=uploading_status_of(server),
            file_list=file_names(server),
            raw=body,
        )


def uploading_status_of(server_response: Mapping[str, Any]) -> UploadingStatus:
    """serverResponse.uploadingStatus (or web mode's upload_service one); "unknow" is "unknown"."""
    status = server_response.get("uploadingStatus")
    for state in _sequence(server_response.get("extensionServiceState")):
        state_map = _mapping(state)
        if status is None and state_map.get("serviceName") == "upload_service":
            status = _mapping(state_map.get("payload")).get("uploadingStatus")
    if status == "uploaded":
        return "uploaded"
    if status == "backuped":
        return "backuped"
    return "unknown"  # also the legacy spelling "unknow", and anything undocumented


def file_names(server_response: Mapping[str, Any]) -> tuple[str, ...]:
    """File names from fileList ("string" or "json" fileListMode) and web mode's service states."""
    names = _names_in(server_response.get("fileList"))
    for state in _sequence(server_response.get("extensionServiceState")):
        names += _names_in(_mapping(_mapping(state).get("payload")).get("fileList"))
    return tuple(dict.fromkeys(names))


def redact(value: Any) -> Any:
    """A copy of a JSON value without secrets, for CallRecords, logs and errors.

    Drops every key named like a credential at any depth, and keeps only vendor, region, bucket,
    fileNamePrefix and extensionParams.endpoint of any storageConfig.
    """
    if isinstance(value, Mapping):
        kept: dict[str, Any] = {}
        for key, item in value.items():
            if str(key).lower() in SECRET_KEYS:
                continue
            kept[key] = _redact_storage(item) if key == "storageConfig" else redact(item)
        return kept
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    return value


def _redact_storage(storage: Any) -> Any:
    if not isinstance(storage, Mapping):
        return None
    kept = {key: redact(storage[key]) for key in STORAGE_KEPT_KEYS if key in storage}
    endpoint = _mapping(storage.get("extensionParams")).get("endpoint")
    if endpoint is not None:
        kept["extensionParams"] = {"endpoint": _where_only(endpoint)}
    return kept


def _where_only(endpoint: Any) -> Any:
    """An endpoint as where, never who: without a user:password@ or a query, which can
    carry credentials (Agora's S3-compatible vendor takes any URL here)."""
    if not isinstance(endpoint, str):
        return endpoint
    scheme, sep, rest = endpoint.partition("://")
    if not sep:
        scheme, rest = "", endpoint
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    authority, slash, path = rest.partition("/")
    return f"{scheme}{sep}{authority.rpartition('@')[2]}{slash}{path}"


@dataclass(frozen=True)
class _Request:
    """One logical call, repeated on each attempt; `summary` is the body with secrets removed."""

    endpoint: Endpoint
    method: str
    path: str
    body: Mapping[str, Any] | None
    summary: Mapping[str, Any] | None
    resource_id: str | None
    sid: str | None
    timeout: tuple[float, float]  # (connect, read), as requests takes it

    def record(
        self,
        attempt: int,
        duration_ms: float,
        *,
        http_status: int | None = None,
        response: Any = None,
        error: str | None = None,
    ) -> CallRecord:
        return CallRecord(
            endpoint=self.endpoint,
            method=self.method,
            path=self.path,
            resource_id=self.resource_id or _str_or_none(response, "resourceId"),
            sid=self.sid or _str_or_none(response, "sid"),
            request=self.summary,
            http_status=http_status,
            response=response,
            duration_ms=duration_ms,
            attempt=attempt,
            error=error,
        )


@dataclass(frozen=True)
class _Answer:
    http_status: int
    body: Mapping[str, Any]
    summary: Any
    retry_after_s: float | None


class AgoraClient:
    """Calls acquire, start, query, update, updateLayout and stop for one App ID.

    Retries only what is safe to repeat (connection failures, 5xx, 429, and 206 code 65 outside
    acquire), waiting backoff_s between attempts; every attempt is reported to on_call.
    on_call runs on the caller's thread and must not raise.
    """

    def __init__(
        self,
        base_url: str,
        app_id: str,
        customer_id: str,
        customer_secret: str,
        *,
        timeout_s: float = 10.0,
        max_attempts: int = 3,
        backoff_s: Sequence[float] = (1.0, 3.0, 6.0),
        session: requests.Session | None = None,
        on_call: Callable[[CallRecord], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not backoff_s:
            raise ValueError("backoff_s needs at least one delay")
        self.base_url = base_url.rstrip("/")
        self.app_id = app_id
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = tuple(backoff_s)
        self._auth = HTTPBasicAuth(customer_id, customer_secret)
        self._owns_session = session is None
        self._session = session if session is not None else requests.Session()
        self._on_call = on_call
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"AgoraClient(base_url={self.base_url!r}, app_id={self.app_id!r})"

    def __enter__(self) -> AgoraClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session if this client created it."""
        if self._owns_session:
            self._session.close()

    def acquire(self, cname: str, uid: str, client_request: Mapping[str, Any] | None = None) -> str:
        """Reserve a recording resource; returns the resourceId (valid for 5 minutes)."""
        body = {"cname": cname, "uid": uid, "clientRequest": dict(client_request or {})}
        answer = self._exchange("acquire", "POST", "/acquire", body)
        return self._required(answer, "resourceId", "acquire")

    def start(
        self,
        resource_id: str,
        mode: Mode,
        cname: str,
        uid: str,
        client_request: Mapping[str, Any],
    ) -> str:
        """Start recording; returns the sid.

        Raises:
            AlreadyStartedError: 201 code 7, this resource ID was already started.
            TaskConflictError: 400 code 53, the same cname + uid is already recording.
        """
        path = f"/resourceid/{_segment(resource_id)}/mode/{_checked(mode)}/start"
        body = {"cname": cname, "uid": uid, "clientRequest": dict(client_request)}
        answer = self._exchange("start", "POST", path, body, resource_id=resource_id)
        return self._required(answer, "sid", "start")

    def query(self, resource_id: str, sid: str, mode: Mode) -> QueryResult:
        """The task's status and files while it runs.

        Raises:
            AgoraNotFoundError: the task is gone (or migrating after a failover).
        """
        path = f"{self._task_path(resource_id, sid, mode)}/query"
        answer = self._exchange("query", "GET", path, None, resource_id=resource_id, sid=sid)
        return QueryResult.from_response(answer.body)

    def update(
        self,
        resource_id: str,
        sid: str,
        mode: Mode,
        cname: str,
        uid: str,
        client_request: Mapping[str, Any],
    ) -> None:
        """Change subscriptions, web onhold, RTMP outputs or the storage STS token."""
        path = f"{self._task_path(resource_id, sid, mode)}/update"
        body = {"cname": cname, "uid": uid, "clientRequest": dict(client_request)}
        self._exchange("update", "POST", path, body, resource_id=resource_id, sid=sid)

    def update_layout(
        self,
        resource_id: str,
        sid: str,
        cname: str,
        uid: str,
        client_request: Mapping[str, Any],
    ) -> None:
        """Replace the whole composite layout (mix mode only)."""
        path = f"{self._task_path(resource_id, sid, 'mix')}/updateLayout"
        body = {"cname": cname, "uid": uid, "clientRequest": dict(client_request)}
        self._exchange("update_layout", "POST", path, body, resource_id=resource_id, sid=sid)

    def stop(
        self,
        resource_id: str,
        sid: str,
        mode: Mode,
        cname: str,
        uid: str,
        async_stop: bool = False,
    ) -> StopResult:
        """Stop recording. 206 answers are results (see StopResult), not errors.

        A synchronous stop is read with at least SYNC_STOP_READ_TIMEOUT_S.

        Raises:
            InvalidOperationError: 400 code 49, the task is already exiting; with attempt > 1
                most likely because our own earlier attempt got through.
            AgoraNotFoundError: 404, the task is gone.
        """
        path = f"{self._task_path(resource_id, sid, mode)}/stop"
        body = {"cname": cname, "uid": uid, "clientRequest": {"async_stop": async_stop}}
        read_timeout_s = (
            self.timeout_s if async_stop else max(self.timeout_s, SYNC_STOP_READ_TIMEOUT_S)
        )
        try:
            answer = self._exchange(
                "stop",
                "POST",
                path,
                body,
                resource_id=resource_id,
                sid=sid,
                read_timeout_s=read_timeout_s,
            )
        except RequestNotCompletedError as err:
            # Agora got the stop but could not confirm it in time, even after retries: report
            # that as a result so the caller records "stop sent, upload status unknown".
            raw = err.body if isinstance(err.body, Mapping) else {}
            return StopResult(206, CODE_REQUEST_NOT_COMPLETED, "unknown", (), raw)
        return StopResult.from_response(answer.http_status, answer.body)

    def _task_path(self, resource_id: str, sid: str, mode: Mode) -> str:
        return f"/resourceid/{_segment(resource_id)}/sid/{_segment(sid)}/mode/{_checked(mode)}"

    def _required(self, answer: _Answer, key: str, endpoint: Endpoint) -> str:
        value = answer.body.get(key)
        if not isinstance(value, str) or not value:
            raise AgoraError(
                f"{endpoint}: HTTP {answer.http_status} without a {key}",
                endpoint=endpoint,
                http_status=answer.http_status,
                body=answer.summary,
            )
        return value

    def _exchange(
        self,
        endpoint: Endpoint,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        *,
        resource_id: str | None = None,
        sid: str | None = None,
        read_timeout_s: float | None = None,
    ) -> _Answer:
        call = _Request(
            endpoint=endpoint,
            method=method,
            path=f"/v1/apps/{_segment(self.app_id)}/cloud_recording{path}",
            body=body,
            summary=redact(body) if body is not None else None,
            resource_id=resource_id,
            sid=sid,
            timeout=(self.timeout_s, read_timeout_s or self.timeout_s),
        )
        for attempt in range(1, self.max_attempts + 1):
            try:
                answer = self._attempt(call, attempt)
                error = _error_for(endpoint, answer, attempt)
            except AgoraConnectionError as err:
                error = err
            if error is None:
                return answer
            is_retried = isinstance(error, RETRIED_ERRORS[endpoint])
            if not is_retried or attempt == self.max_attempts:
                raise error
            delay_s = self.backoff_s[min(attempt - 1, len(self.backoff_s) - 1)]
            if isinstance(error, AgoraRateLimitedError) and error.retry_after_s is not None:
                delay_s = max(delay_s, min(error.retry_after_s, RETRY_AFTER_CAP_S))
            logger.warning(
                "agora %s attempt %d failed (%s), retrying in %.1fs",
                endpoint,
                attempt,
                error.reason,
                delay_s,
                extra={"agora_endpoint": endpoint, "sid": sid, "reason": error.reason},
            )
            self._sleep(delay_s)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _attempt(self, call: _Request, attempt: int) -> _Answer:
        started = time.monotonic()
        try:
            response = self._session.request(
                call.method,
                self.base_url + call.path,
                json=call.body,
                auth=self._auth,
                timeout=call.timeout,
                headers={"Accept": "application/json"},
            )
        except (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
        ) as exc:
            failure = type(exc).__name__
            self._report(call.record(attempt, _elapsed_ms(started), error=failure))
            # "from None": the requests exception holds the prepared request and its
            # Authorization header, which must not travel with our error.
            raise AgoraConnectionError(
                f"{call.endpoint}: no answer from Agora ({failure})",
                endpoint=call.endpoint,
                attempt=attempt,
            ) from None
        duration_ms = _elapsed_ms(started)
        parsed = _json_object(response)
        summary: Any = redact(parsed) if parsed is not None else _truncated(response.text)
        record = call.record(
            attempt, duration_ms, http_status=response.status_code, response=summary
        )
        self._report(record)
        logger.info(
            "agora %s answered %d",
            call.endpoint,
            response.status_code,
            extra={
                "agora_endpoint": call.endpoint,
                "http_status": response.status_code,
                "attempt": attempt,
                "duration_ms": round(duration_ms, 1),
                "sid": record.sid,
            },
        )
        return _Answer(
            response.status_code,
            parsed or {},
            summary,
            _retry_after_s(response.headers.get("Retry-After")),
        )

    def _report(self, record: CallRecord) -> None:
        if self._on_call is not None:
            self._on_call(record)


def _error_for(endpoint: Endpoint, answer: _Answer, attempt: int) -> AgoraError | None:
    """The typed error for an answer, or None when the answer is a result."""
    status, body = answer.http_status, answer.body
    code = _int_or_none(body.get("code"))
    if status == 200 or (
        endpoint == "stop" and status == 206 and code != CODE_REQUEST_NOT_COMPLETED
    ):
        return None  # stop's other 206s (435, legacy backup / not over yet) are answers
    detail = body.get("reason") or body.get("message")
    detail_text = detail if isinstance(detail, str) else None
    message = f"{endpoint}: HTTP {status}" + (f" code {code}" if code is not None else "")
    message += f" ({detail_text})" if detail_text else ""
    common: dict[str, Any] = {
        "endpoint": endpoint,
        "http_status": status,
        "code": code,
        "detail": detail_text,
        "body": answer.summary,
        "attempt": attempt,
    }
    if status == 201 and endpoint == "start":
        return AlreadyStartedError(message, sid=_str_or_none(body, "sid"), **common)
    if status == 206 and code == CODE_REQUEST_NOT_COMPLETED:
        return RequestNotCompletedError(message, **common)
    if status == 401:
        return AgoraAuthError(message, **common)
    if status == 429:
        return AgoraRateLimitedError(message, retry_after_s=answer.retry_after_s, **common)
    if status == 404 and not (detail_text or "").lower().startswith("no route"):
        return AgoraNotFoundError(message, **common)
    if status == 400:
        by_code: dict[int | None, type[AgoraError]] = {
            CODE_INVALID_PARAMETERS: InvalidParametersError,
            CODE_TASK_CONFLICT: TaskConflictError,
            CODE_INVALID_OPERATION: InvalidOperationError,
        }
        return by_code.get(code, AgoraError)(message, **common)
    if status >= 500:
        return AgoraServerError(message, **common)
    # Wrong route (404 "no Route matched"), other 2xx shapes and the rest: not retried.
    return AgoraError(message, **common)


def _segment(value: str) -> str:
    return quote(value, safe="")


def _checked(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, not {mode!r}")
    return mode


def _elapsed_ms(started: float) -> float:
    return (time.monotonic() - started) * 1000.0


def _json_object(response: requests.Response) -> dict[str, Any] | None:
    try:
        parsed = response.json()
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _truncated(text: str) -> str:
    if len(text) <= RESPONSE_TEXT_LIMIT:
        return text
    return text[:RESPONSE_TEXT_LIMIT] + "...[truncated]"


def _retry_after_s(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: the backoff schedule is good enough


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _str_or_none(value: Any, key: str) -> str | None:
    item = value.get(key) if isinstance(value, Mapping) else None
    return item if isinstance(item, str) and item else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _sequence(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _names_in(file_list: Any) -> list[str]:
    if isinstance(file_list, str):
        return [file_list] if file_list else []
    names: list[str] = []
    for entry in _sequence(file_list):
        entry_map = _mapping(entry)
        name = entry_map.get("fileName") or entry_map.get("filename")
        if isinstance(name, str) and name:
            names.append(name)
    return names
