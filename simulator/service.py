"""Agora Cloud Recording as its REST API sees it: resources, tasks and documented answers.

No HTTP here: server.py maps routes onto these methods and ApiError onto responses. The
answers and codes are those of FACTS.md section 6.2-6.3.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import CancelledError
from dataclasses import dataclass
from typing import Any, Final

from simulator.callbacks import Notifier
from simulator.config import SimulatorConfig
from simulator.faults import STOP_206, STOP_EXTRA_FILE, FaultBook
from simulator.files import Destination, ObjectStore, RecordingFiles
from simulator.recording import Phase, Recording, StopOutcome, Task

CODE_INVALID_PARAMETERS: Final = 2
CODE_ALREADY_STARTED: Final = 7
CODE_INVALID_OPERATION: Final = 49
CODE_TASK_CONFLICT: Final = 53
CODE_REQUEST_NOT_COMPLETED: Final = 65
CODE_NO_RECORDED_DATA: Final = 435
MAX_UID: Final = 2**32 - 1


class ApiError(Exception):
    """An answer other than 200, with Agora's JSON body."""

    def __init__(self, http_status: int, body: Mapping[str, Any]) -> None:
        super().__init__(f"HTTP {http_status}: {body}")
        self.http_status = http_status
        self.body = dict(body)


def invalid_parameters(why: str) -> ApiError:
    return ApiError(400, {"code": CODE_INVALID_PARAMETERS, "reason": f"invalid parameter: {why}"})


def worker_not_found() -> ApiError:
    return ApiError(404, {"code": 404, "reason": "failed to find worker"})


@dataclass
class Resource:
    resource_id: str
    cname: str
    uid: str
    sid: str | None = None


class CloudRecordingService:
    """Resources, recordings and the faults that bend them, for one App ID."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.faults = FaultBook()
        self._notifier = Notifier(
            config.callback_url,
            config.callback_secret,
            time_scale=config.time_scale,
            retry_intervals_s=config.retry_intervals_s,
            timeout_s=config.delivery_timeout_s,
            seed=config.seed,
        )
        self._store = ObjectStore()
        self._lock = threading.Lock()
        self._resources: dict[str, Resource] = {}
        self._recordings: dict[str, Recording] = {}

    def acquire(self, body: Any) -> dict[str, Any]:
        cname, uid = _identity(body)
        resource_id = secrets.token_urlsafe(96)  # real resource IDs are ~130 url-safe chars
        with self._lock:
            self._resources[resource_id] = Resource(resource_id, cname, uid)
        return {"cname": cname, "uid": uid, "resourceId": resource_id}

    def start(self, resource_id: str, mode: str, body: Any) -> tuple[int, dict[str, Any]]:
        cname, uid = _identity(body)
        client_request = _client_request(body)
        storage = client_request.get("storageConfig")
        if not isinstance(storage, Mapping):
            raise invalid_parameters("clientRequest.storageConfig is required")
        ids = {"cname": cname, "uid": uid, "resourceId": resource_id}
        with self._lock:
            resource = self._resources.get(resource_id)
            if resource is None or (resource.cname, resource.uid) != (cname, uid):
                raise invalid_parameters("resourceId does not match this cname and uid")
            if resource.sid is not None:
                return 201, ids | {"code": CODE_ALREADY_STARTED, "reason": "already started"}
            if any(
                r.task.cname == cname and r.task.uid == uid and r.phase is not Phase.EXITED
                for r in self._recordings.values()
            ):
                raise ApiError(400, {"code": CODE_TASK_CONFLICT, "reason": "task conflict"})
            sid = uuid.uuid4().hex
            resource.sid = sid
            recording = Recording(
                Task(resource_id, sid, mode, cname, uid, client_request),
                config=self.config,
                fault_book=self.faults,
                notifier=self._notifier,
                store=self._store,
                destination=Destination.from_storage_config(
                    storage,
                    endpoint=self.config.s3_endpoint,
                    access_key=self.config.s3_access_key,
                    secret_key=self.config.s3_secret_key,
                ),
            )
            self._recordings[sid] = recording
        recording.start()
        return 200, ids | {"sid": sid}

    def query(self, resource_id: str, sid: str, mode: str) -> dict[str, Any]:
        recording = self._active(resource_id, sid, mode)
        server_response = query_server_response(
            recording.task, recording.status, recording.files_so_far()
        )
        return _ids(recording.task) | {"serverResponse": server_response}

    def update(self, resource_id: str, sid: str, mode: str, body: Any) -> dict[str, Any]:
        _identity(body)
        _client_request(body)
        return _ids(self._active(resource_id, sid, mode).task)

    def update_layout(self, resource_id: str, sid: str, body: Any) -> dict[str, Any]:
        return self.update(resource_id, sid, "mix", body)

    def stop(self, resource_id: str, sid: str, mode: str, body: Any) -> tuple[int, dict[str, Any]]:
        _identity(body)
        async_stop = _client_request(body).get("async_stop", False) is True
        recording = self._known(resource_id, sid, mode)
        ids = _ids(recording.task)
        if recording.faults.has(STOP_206):
            recording.request_stop()  # the stop lands; only its answer is lost
            return 206, ids | {
                "code": CODE_REQUEST_NOT_COMPLETED,
                "reason": "request not completed",
            }
        if not recording.request_stop():
            raise ApiError(400, {"code": CODE_INVALID_OPERATION, "reason": "invalid operation"})
        if async_stop:
            return 200, ids | {"serverResponse": {"uploadingStatus": "unknown"}}
        try:
            outcome = recording.outcome.result(timeout=self.config.stop_timeout_s)
        except (TimeoutError, CancelledError):
            return 206, ids | {
                "code": CODE_REQUEST_NOT_COMPLETED,
                "reason": "request not completed",
            }
        if outcome.files is None:
            return 206, ids | {"code": CODE_NO_RECORDED_DATA, "reason": "no recorded data"}
        answer = stop_server_response(recording.task, outcome)
        if recording.faults.has(STOP_EXTRA_FILE) and isinstance(answer.get("fileList"), list):
            extra = {"fileName": f"{sid}_unexpected.m3u8", "trackType": "audio", "uid": "1",
                     "mixedAllUser": False, "isPlayable": True, "sliceStartTime": 0}  # fmt: skip
            answer["fileList"] = [*answer["fileList"], extra]
        return 200, ids | {"serverResponse": answer}

    def stats(self) -> dict[str, Any]:
        """Callback delivery counts per sid, plus each session's phase and status."""
        delivery = self._notifier.stats()
        with self._lock:
            recordings = list(self._recordings.values())
        sessions: dict[str, dict[str, Any]] = {}
        for r in recordings:
            session: dict[str, Any] = {"cname": r.task.cname, "mode": r.task.mode}
            session |= {"phase": r.phase.value, "status": r.status}
            sessions[r.task.sid] = session | delivery.get(r.task.sid, {})
        return {"sessions": sessions, "is_idle": self.is_idle()}

    def is_idle(self) -> bool:
        """No recording thread alive (all exited, backups restored) and no callback pending."""
        with self._lock:
            recordings = list(self._recordings.values())
        return not any(r.is_alive() for r in recordings) and self._notifier.is_idle()

    def wait_until_idle(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._lock:
            recordings = list(self._recordings.values())
        for recording in recordings:
            recording.join(max(0.0, deadline - time.monotonic()))
        return self._notifier.wait_until_idle(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        """Abandon every recording, stop delivering, close storage clients."""
        with self._lock:
            recordings = list(self._recordings.values())
        for recording in recordings:
            recording.close()
        self._notifier.close()
        self._store.close()

    def _known(self, resource_id: str, sid: str, mode: str) -> Recording:
        with self._lock:
            recording = self._recordings.get(sid)
        if recording is None or recording.task.resource_id != resource_id:
            raise worker_not_found()
        exited_for_s = recording.exited_for_s()
        if exited_for_s is not None and exited_for_s > self.config.scaled(
            self.config.forget_after_s
        ):
            raise worker_not_found()
        if recording.task.mode != mode:
            raise invalid_parameters(f"this task records in {recording.task.mode} mode")
        return recording

    def _active(self, resource_id: str, sid: str, mode: str) -> Recording:
        recording = self._known(resource_id, sid, mode)
        if recording.phase is not Phase.RECORDING:
            raise worker_not_found()
        return recording


def query_server_response(task: Task, status: int, files: RecordingFiles | None) -> dict[str, Any]:
    if task.is_web:
        payload = {"fileList": _web_entries(files), "onhold": False, "state": "inProgress"}
        return {
            "status": status,
            "extensionServiceState": [{"payload": payload, "serviceName": "web_recorder_service"}],
        }
    file_list_mode, file_list = _file_list(task, files)
    start_ms = min((p.slice_start_ms for p in files.playlists), default=0) if files else 0
    return {
        "status": status,
        "fileListMode": file_list_mode,
        "fileList": file_list,
        "sliceStartTime": start_ms,
    }


def stop_server_response(task: Task, outcome: StopOutcome) -> dict[str, Any]:
    if task.is_web:
        recorder = {"fileList": _web_entries(outcome.files), "onhold": False, "state": "exit"}
        return {
            "extensionServiceState": [
                {
                    "payload": {"uploadingStatus": outcome.uploading_status},
                    "serviceName": "upload_service",
                },
                {"payload": recorder, "serviceName": "web_recorder_service"},
            ]
        }
    file_list_mode, file_list = _file_list(task, outcome.files)
    return {
        "fileListMode": file_list_mode,
        "fileList": file_list,
        "uploadingStatus": outcome.uploading_status,
    }


def _file_list(task: Task, files: RecordingFiles | None) -> tuple[str, Any]:
    """Composite HLS-only answers a "string" (the playlist name); the rest a "json" list."""
    if task.mode == "mix" and not task.has_mp4:
        return "string", files.playlists[0].name if files else ""
    return "json", files.file_list() if files else []


def _web_entries(files: RecordingFiles | None) -> list[dict[str, Any]]:
    entries = files.file_list() if files else []
    return [{"filename": e["fileName"], "sliceStartTime": e["sliceStartTime"]} for e in entries]


def _ids(task: Task) -> dict[str, Any]:
    return {"cname": task.cname, "uid": task.uid, "resourceId": task.resource_id, "sid": task.sid}


def _identity(body: Any) -> tuple[str, str]:
    """cname and uid from a request body; uid must be a string of 1..2^32-1."""
    if not isinstance(body, Mapping):
        raise invalid_parameters("the body must be a JSON object")
    cname, uid = body.get("cname"), body.get("uid")
    if not isinstance(cname, str) or not cname:
        raise invalid_parameters("cname")
    if not isinstance(uid, str) or not uid.isdigit() or not 0 < int(uid) <= MAX_UID:
        raise invalid_parameters("uid must be a string holding 1..4294967295")
    return cname, uid


def _client_request(body: Any) -> Mapping[str, Any]:
    client_request = body.get("clientRequest") if isinstance(body, Mapping) else None
    if not isinstance(client_request, Mapping):
        raise invalid_parameters("clientRequest must be an object")
    return client_request
