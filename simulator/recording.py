"""One simulated recording: its callback timeline (on its own thread), its files, its exit.

The timeline follows Agora's documented order (FACTS.md sections 2-3): 40, 30, 44/43, 42, 4,
then 33 once a minute; on stop or idle exit 41, 33 at 10000, 31 or 32, 11. A stop that comes
early fast-forwards the start-up events rather than skipping them, so the order always holds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from simulator.callbacks import Notice, Notifier, new_notice_id, now_ms
from simulator.config import SimulatorConfig
from simulator.faults import (
    BACKUPED,
    BACKUPED_NEVER_RESTORED,
    DOWNLOAD_FAILED,
    FAILOVER,
    IDLE_EXIT,
    NO_RECORDER_START,
    NOTHING_RECORDED,
    RECORDER_ERROR,
    SLICE_TO_BACKUP,
    STOP_206,
    UPLOAD_FAILED,
    FaultBook,
    Faults,
)
from simulator.files import (
    STORAGE_ERRORS,
    Destination,
    ObjectStore,
    RecordingFiles,
    backup_name,
    composite_playlist,
    individual_playlist,
    mp4_name,
    web_safe_cname,
)

logger = logging.getLogger(__name__)

# payload.serviceType (FACTS.md 2.3)
SERVICE_CLOUD_RECORDING: Final = 0
SERVICE_RECORDER: Final = 1
SERVICE_UPLOADER: Final = 2
SERVICE_WEB_RECORDER: Final = 6
SERVICE_DOWNLOAD: Final = 8
# recorder_leave leaveCode bits
LEAVE_INIT_FAILED: Final = 0
LEAVE_SIGNAL: Final = 2  # Agora does not say which bit a stop sets: SIGINT is our reading
LEAVE_NO_USERS: Final = 4
# query's serverResponse.status (FACTS.md section 3)
STATUS_INITIALISED: Final = 1
STATUS_RECORDER_STARTING: Final = 2
STATUS_RECORDER_READY: Final = 4
STATUS_RUNNING: Final = 5
STATUS_SERVICE_STOPPED: Final = 7
STATUS_ABNORMAL_EXIT: Final = 20
ALL_STREAMS: Final = "#allstream#"


class Phase(Enum):
    RECORDING = "recording"
    EXITING = "exiting"  # stop accepted, idle timeout or error: a second stop gets code 49
    EXITED = "exited"


@dataclass(frozen=True)
class Task:
    """What start was asked: enough to play the recording and to answer for it."""

    resource_id: str
    sid: str
    mode: str
    cname: str
    uid: str
    client_request: Mapping[str, Any]

    @property
    def is_web(self) -> bool:
        return self.mode == "web"

    @property
    def tracks(self) -> tuple[str, ...]:
        """recordingConfig.streamTypes: 0 audio, 1 video, 2 both (the default)."""
        stream_types = self._recording_config().get("streamTypes", 2)
        return {0: ("audio",), 1: ("video",)}.get(stream_types, ("audio", "video"))

    @property
    def has_mp4(self) -> bool:
        config = self.client_request.get("recordingFileConfig")
        types = config.get("avFileType", ["hls"]) if isinstance(config, Mapping) else ["hls"]
        return self.mode != "individual" and "mp4" in types

    def publishers(self, faults: Faults, default: tuple[str, ...]) -> tuple[str, ...]:
        """Recorded users: the faults' option, else the explicit subscribe lists, else default."""
        if faults.publishers is not None:
            return faults.publishers
        config = self._recording_config()
        uids: list[str] = []
        for key in ("subscribeAudioUids", "subscribeVideoUids"):
            for uid in config.get(key) or []:
                if isinstance(uid, str) and uid != ALL_STREAMS and uid not in uids:
                    uids.append(uid)
        return tuple(uids) or default

    def _recording_config(self) -> Mapping[str, Any]:
        config = self.client_request.get("recordingConfig")
        return config if isinstance(config, Mapping) else {}


@dataclass(frozen=True)
class StopOutcome:
    """How the session ended, for a synchronous stop's answer; files None = nothing recorded."""

    uploading_status: str
    files: RecordingFiles | None


class Recording:
    """One recording, from start to exit, on its own thread."""

    def __init__(
        self,
        task: Task,
        *,
        config: SimulatorConfig,
        fault_book: FaultBook,
        notifier: Notifier,
        store: ObjectStore,
        destination: Destination | None,
    ) -> None:
        self.task = task
        self._config = config
        self._fault_book = fault_book
        self._notifier = notifier
        self._store = store
        self._destination = destination
        self._lock = threading.Lock()
        self._wake = threading.Event()  # a stop or a shutdown: stop waiting
        self._shutdown = threading.Event()
        self._phase = Phase.RECORDING
        self._status = STATUS_INITIALISED
        self._sequence = 0
        self._recording_since: float | None = None  # monotonic, at the first slice
        self._slice_start_ms = 0
        self._final_files: RecordingFiles | None = None
        self._exited_at: float | None = None  # monotonic
        self.outcome: Future[StopOutcome] = Future()
        self._thread = threading.Thread(
            target=self._run, name=f"simulator-recording-{task.sid[:8]}", daemon=True
        )

    @property
    def phase(self) -> Phase:
        with self._lock:
            return self._phase

    @property
    def status(self) -> int:
        with self._lock:
            return self._status

    def exited_for_s(self) -> float | None:
        """Real seconds since session_exit; None while the session lasts."""
        with self._lock:
            exited_at = self._exited_at
        return None if exited_at is None else time.monotonic() - exited_at

    @property
    def faults(self) -> Faults:
        return self._fault_book.get(self.task.cname)

    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> bool:
        """Begin the exit; False if the recording is already exiting or gone."""
        with self._lock:
            if self._phase is not Phase.RECORDING:
                return False
            self._phase = Phase.EXITING
        self._wake.set()
        return True

    def files_so_far(self) -> RecordingFiles | None:
        """The files a query would list now; None before the first file is uploaded."""
        with self._lock:
            if self._final_files is not None:
                return self._final_files
            if self._status != STATUS_RUNNING:
                return None
        return self._recorded_files()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout_s: float | None = None) -> None:
        if self._thread.ident is not None:
            self._thread.join(timeout_s)

    def close(self) -> None:
        """Abandon the timeline (no more callbacks or files) and join the thread."""
        self._shutdown.set()
        self._wake.set()
        self.join()
        self.outcome.cancel()  # a stop still waiting answers 206/65

    def _run(self) -> None:
        if not self._play_start():
            return
        if self.faults.has(RECORDER_ERROR):
            self._fail()
            return
        leave_code = self._record()
        if leave_code is not None:
            self._finish(leave_code)

    def _play_start(self) -> bool:
        """Start-up events; False on shutdown."""
        faults = self.faults
        if faults.has(NO_RECORDER_START):
            self._set_status(STATUS_RECORDER_STARTING)
            return self._pause(1.0)
        if self.task.is_web:
            return self._play_web_start()
        if not self._pause(1.0):
            return False
        self._emit(40, SERVICE_RECORDER, {"msgName": "recorder_started", "status": 0})
        self._set_status(STATUS_RECORDER_READY)
        if not self._pause(0.1):
            return False
        self._emit(30, SERVICE_UPLOADER, {"msgName": "uploader_started", "status": 0})
        if faults.has(RECORDER_ERROR) or faults.has(NOTHING_RECORDED) or not self._pause(1.0):
            return not self._shutdown.is_set()
        publishers = self.task.publishers(faults, self._config.publishers)
        for uid in publishers:
            for event_type, track in ((44, "video"), (43, "audio")):
                if track in self.task.tracks:
                    msg_name = f"recorder_{track}_stream_state_changed"
                    details = {"msgName": msg_name, "streamUid": uid, "state": 0, "UtcMs": now_ms()}
                    self._emit(event_type, SERVICE_RECORDER, details)
        if not self._pause(1.0):
            return False
        self._start_slices(publishers)
        if not self._pause(13.0):  # the first slice is cut and uploaded about 15 s in
            return False
        files = self._recorded_files()
        if files is not None:
            first = files.playlists[0].name
            self._emit(
                4,
                SERVICE_CLOUD_RECORDING,
                {"msgName": "cloud_recording_file_infos", "fileList": first},
            )
        self._set_status(STATUS_RUNNING)
        self._mid_recording_faults()
        return True

    def _mid_recording_faults(self) -> None:
        faults = self.faults
        if faults.has(FAILOVER):
            # HA moved the task; it goes on under a new recorder uid.
            failover = {"msgName": "session_failover", "newUid": 3957220413}
            self._emit(12, SERVICE_CLOUD_RECORDING, failover)
        if faults.has(SLICE_TO_BACKUP):
            warning = {"msgName": "cloud_recording_warning", "module": 1, "warnCode": 32}
            self._emit(2, SERVICE_CLOUD_RECORDING, warning)

    def _play_web_start(self) -> bool:
        if not self._pause(1.0):
            return False
        self._emit(30, SERVICE_UPLOADER, {"msgName": "uploader_started", "status": 0})
        if not self._pause(1.0):
            return False
        started_ms = now_ms()
        details = {"msgName": "web_recorder_started", "recorderStartTime": started_ms}
        self._emit(70, SERVICE_WEB_RECORDER, details)
        with self._lock:
            self._recording_since, self._slice_start_ms = time.monotonic(), started_ms
        if not self._pause(13.0):
            return False
        self._set_status(STATUS_RUNNING)
        self._mid_recording_faults()
        return True

    def _start_slices(self, publishers: tuple[str, ...]) -> None:
        started_ms = now_ms()
        with self._lock:
            self._recording_since, self._slice_start_ms = time.monotonic(), started_ms
        if self.task.mode == "individual":
            slices = [(uid, track, False) for uid in publishers for track in self.task.tracks]
        else:
            slices = [("0", self._composite_track(), True)]
        for uid, track, is_mixed in slices:
            details = {
                "msgName": "recorder_slice_start",
                "startUtcMs": started_ms,
                "discontinueUtcMs": started_ms,
                "mixedAllUser": is_mixed,
                "streamUid": uid,
                "trackType": track,
            }
            self._emit(42, SERVICE_RECORDER, details)

    def _record(self) -> int | None:
        """33 once a minute until stop (leaveCode 2) or idle exit (4); None on shutdown."""
        faults = self.faults
        began = time.monotonic()
        idle_deadline = (
            began + self._config.scaled(faults.max_idle_s) if faults.has(IDLE_EXIT) else None
        )
        minute = 0
        while True:
            if self._shutdown.is_set():
                return None
            if self.phase is not Phase.RECORDING:
                return LEAVE_SIGNAL
            next_progress = began + self._config.scaled(60.0 * (minute + 1))
            until = min(next_progress, idle_deadline or next_progress)
            self._wake.wait(max(0.0, until - time.monotonic()))
            if self._shutdown.is_set():
                return None
            if idle_deadline is not None and time.monotonic() >= idle_deadline:
                with self._lock:
                    if self._phase is Phase.RECORDING:
                        self._phase = Phase.EXITING
                        return LEAVE_NO_USERS
            if self.phase is not Phase.RECORDING:
                return LEAVE_SIGNAL
            minute += 1
            if self._recording_since is not None:
                progress = 10000 - 10000 // (10 + minute)  # grows, stays below 10000
                details = {"msgName": "uploading_progress", "progress": progress}
                self._emit(33, SERVICE_UPLOADER, details)

    def _finish(self, leave_code: int) -> None:
        faults = self.faults
        files = self._recorded_files()
        if self.task.is_web:
            self._emit(71, SERVICE_WEB_RECORDER, self._web_stopped_details(files))
        elif not faults.has(NO_RECORDER_START):  # a recorder that never joined cannot leave
            self._emit(41, SERVICE_RECORDER, {"msgName": "recorder_leave", "leaveCode": leave_code})
        if files is None:  # nobody published (nothing_recorded, no_recorder_start)
            self.outcome.set_result(StopOutcome("unknown", None))
            self._exit(exit_status=0)
            return
        with self._lock:
            self._final_files = files
        is_backuped = faults.has(BACKUPED) or faults.has(BACKUPED_NEVER_RESTORED)
        uploading_status = "backuped" if is_backuped else self._upload(files)
        self._emit(33, SERVICE_UPLOADER, {"msgName": "uploading_progress", "progress": 10000})
        self.outcome.set_result(StopOutcome(uploading_status, files))
        if not faults.has(STOP_206):
            status = 1 if faults.has(UPLOAD_FAILED) else 0
            details: dict[str, Any] = {"msgName": uploading_status, "status": status}
            if not self.task.is_web:  # web mode's 31/32 carry no fileList
                details["fileList"] = files.file_list()
            self._emit(31 if uploading_status == "uploaded" else 32, SERVICE_UPLOADER, details)
        self._exit(exit_status=0)
        if faults.has(DOWNLOAD_FAILED):
            details = {"msgName": "download_failed", "vendor": 11, "region": 0,
                       "bucket": "recordings", "fileName": files.playlists[0].name}  # fmt: skip
            self._emit(90, SERVICE_DOWNLOAD, details)
        if uploading_status == "backuped" and faults.has(BACKUPED):
            self._restore_from_backup(files, faults.restore_delay_s)

    def _fail(self) -> None:
        """recorder_error: a fatal event 1, then the recorder leaves and the session exits."""
        with self._lock:
            self._phase = Phase.EXITING
        details = {
            "msgName": "cloud_recording_error",
            "module": 0,
            "errorLevel": 5,
            "errorCode": 52,
            "stat": 1,
            "errorMsg": "start service timeout",
        }
        self._emit(1, SERVICE_CLOUD_RECORDING, details)
        self._set_status(STATUS_ABNORMAL_EXIT)
        leave = {"msgName": "recorder_leave", "leaveCode": LEAVE_INIT_FAILED}
        self._emit(41, SERVICE_RECORDER, leave)
        self.outcome.set_result(StopOutcome("unknown", None))
        self._exit(exit_status=1)

    def _exit(self, *, exit_status: int) -> None:
        self._emit(
            11, SERVICE_CLOUD_RECORDING, {"msgName": "session_exit", "exitStatus": exit_status}
        )
        with self._lock:
            self._phase = Phase.EXITED
            self._exited_at = time.monotonic()
            if self._status != STATUS_ABNORMAL_EXIT:
                self._status = STATUS_SERVICE_STOPPED
        self._notifier.flush(self.task.sid)

    def _upload(self, files: RecordingFiles) -> str:
        """Write the files; a storage failure sends them to "backup" (event 1, then 32)."""
        if self._destination is None:
            logger.info("sid %s: no reachable storage, files not written", self.task.sid)
            return "uploaded"
        try:
            self._store.write(self._destination, files)
        except STORAGE_ERRORS as exc:
            logger.warning("sid %s: upload failed: %s", self.task.sid, exc)
            details = {
                "msgName": "cloud_recording_error",
                "module": 1,
                "errorLevel": 4,
                "errorCode": 47,
                "stat": 1,
                "errorMsg": "upload file failed",
            }
            self._emit(1, SERVICE_CLOUD_RECORDING, details)
            return "backuped"
        return "uploaded"

    def _restore_from_backup(self, files: RecordingFiles, delay_s: float) -> None:
        """Agora Cloud Backup copies the files on later, playlists renamed <stem>_<tick>_0."""
        if self._shutdown.wait(self._config.scaled(delay_s)) or self._destination is None:
            return
        tick = now_ms()
        renamed = {p.name: backup_name(p.name, tick) for p in files.playlists}
        try:
            self._store.write(self._destination, files, renamed)
        except STORAGE_ERRORS as exc:
            logger.warning("sid %s: restore from backup failed: %s", self.task.sid, exc)

    def _recorded_files(self) -> RecordingFiles | None:
        with self._lock:
            since, start_ms = self._recording_since, self._slice_start_ms
        if since is None:
            return None
        duration_s = (time.monotonic() - since) / self._config.time_scale
        task = self.task
        if task.mode == "individual":
            publishers = task.publishers(self.faults, self._config.publishers)
            playlists = tuple(
                individual_playlist(task.sid, task.cname, uid, track, start_ms, duration_s)
                for uid in publishers
                for track in task.tracks
            )
            return RecordingFiles(playlists) if playlists else None  # no publisher, no file
        cname = web_safe_cname(task.cname) if task.is_web else task.cname
        playlist = composite_playlist(
            task.sid, cname, self._composite_track(), start_ms, duration_s
        )
        mp4s = (mp4_name(task.sid, cname),) if task.has_mp4 else ()
        return RecordingFiles((playlist,), mp4s)

    def _composite_track(self) -> str:
        tracks = self.task.tracks
        return tracks[0] if len(tracks) == 1 else "audio_and_video"

    def _web_stopped_details(self, files: RecordingFiles | None) -> dict[str, Any]:
        entries = files.file_list() if files is not None else []
        return {
            "msgName": "web_recorder_stopped",
            "code": 0,
            "message": "ok",
            "details": "",
            "fileList": [
                {"filename": e["fileName"], "sliceStartTime": e["sliceStartTime"]} for e in entries
            ],
        }

    def _pause(self, seconds: float) -> bool:
        """Wait `seconds` of Agora time, or not at all once a stop is pending; False on shutdown."""
        if not self._wake.is_set():
            self._wake.wait(self._config.scaled(seconds))
        return not self._shutdown.is_set()

    def _set_status(self, status: int) -> None:
        with self._lock:
            self._status = status

    def _emit(self, event_type: int, service_type: int, details: Mapping[str, Any]) -> None:
        task = self.task
        with self._lock:
            sequence, self._sequence = self._sequence, self._sequence + 1
        payload = {
            "cname": task.cname,
            "uid": task.uid,
            "sid": task.sid,
            "sequence": sequence,
            "sendts": now_ms(),
            "serviceType": service_type,
            "serviceScene": "web_record" if task.is_web else "rtc_record",
            "details": dict(details),
        }
        notice = Notice(new_notice_id(), event_type, task.sid, payload)
        self._notifier.publish(notice, self.faults)
