"""Domain vocabulary: Agora's event types and the callback as the rest of the code sees it.

Field names here are ours (snake_case); Agora's camelCase lives only in webhook.schemas.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Literal


class EventType(IntEnum):
    """Every documented Cloud Recording eventType (FACTS.md section 3)."""

    CLOUD_RECORDING_ERROR = 1
    CLOUD_RECORDING_WARNING = 2
    CLOUD_RECORDING_STATUS_UPDATE = 3
    CLOUD_RECORDING_FILE_INFOS = 4
    SESSION_EXIT = 11
    SESSION_FAILOVER = 12
    UPLOADER_STARTED = 30
    UPLOADED = 31
    BACKUPED = 32
    UPLOADING_PROGRESS = 33
    RECORDER_STARTED = 40
    RECORDER_LEAVE = 41
    RECORDER_SLICE_START = 42
    RECORDER_AUDIO_STREAM_STATE_CHANGED = 43
    RECORDER_VIDEO_STREAM_STATE_CHANGED = 44
    RECORDER_SNAPSHOT_FILE = 45
    VOD_STARTED = 60
    VOD_TRIGGERED = 61
    WEB_RECORDER_STARTED = 70
    WEB_RECORDER_STOPPED = 71
    WEB_RECORDER_CAPABILITY_LIMIT = 72
    WEB_RECORDER_RELOAD = 73
    TRANSCODER_STARTED = 80
    TRANSCODER_COMPLETED = 81
    DOWNLOAD_FAILED = 90
    RTMP_PUBLISH_STATUS = 100
    POSTPONE_TRANSCODE_FINAL_RESULT = 1001

    @property
    def msg_name(self) -> str:
        """The details.msgName Agora sends with this event type."""
        return self.name.lower()

    @classmethod
    def known(cls, value: int) -> bool:
        return value in cls._value2member_map_


# Events a worker must look at. Everything else (progress ticks, stream state changes,
# the recorder's start, which the scheduled "recorder_not_started" check reads from the
# summary) only updates the session summary, so it never costs an RQ enqueue.
FOLLOW_UP_EVENTS: frozenset[int] = frozenset(
    {
        EventType.CLOUD_RECORDING_ERROR,
        EventType.CLOUD_RECORDING_WARNING,
        EventType.SESSION_EXIT,
        EventType.SESSION_FAILOVER,
        EventType.UPLOADED,
        EventType.BACKUPED,
        EventType.WEB_RECORDER_STOPPED,
        EventType.WEB_RECORDER_CAPABILITY_LIMIT,
        EventType.TRANSCODER_COMPLETED,
        EventType.DOWNLOAD_FAILED,
        EventType.POSTPONE_TRANSCODE_FINAL_RESULT,
    }
)

# The Console's "Check" button sends one test callback per subscribed event, in this
# channel and from this uid (FACTS.md 4.2: documented for RTC notifications, reported for
# cloud recording). They are stored like any callback, and must get their 200, but no
# recording ran: they are never handed to a worker, so they never raise an alert.
CONSOLE_TEST_CNAME = "test_webhook"
CONSOLE_TEST_UID = "12121212"


def is_console_test(cname: str | None, uid: str | None) -> bool:
    """Whether a session's channel and uid are those of the Console's test callbacks."""
    return cname == CONSOLE_TEST_CNAME and uid == CONSOLE_TEST_UID


UploadStatus = Literal["uploaded", "backuped"]

UPLOAD_STATUS_BY_EVENT: Mapping[int, UploadStatus] = {
    EventType.UPLOADED: "uploaded",
    EventType.BACKUPED: "backuped",
}

# Events whose details carry the recording's file list as an array.
FILE_LIST_EVENTS: frozenset[int] = frozenset(
    {EventType.UPLOADED, EventType.BACKUPED, EventType.WEB_RECORDER_STOPPED}
)


@dataclass(frozen=True)
class RecordedFile:
    """One entry of an uploaded/backuped fileList."""

    file_name: str
    track_type: str | None = None
    uid: str | None = None
    mixed_all_user: bool | None = None
    is_playable: bool | None = None
    slice_start_ms: int | None = None


@dataclass(frozen=True)
class Callback:
    """One Agora notification, as far as we could read it.

    Only notice_id, event_type and sid are guaranteed: a callback whose other fields fail
    validation is still stored (with its errors), so every other field may be None.
    """

    notice_id: str
    event_type: int
    sid: str
    product_id: int | None = None
    notify_ms: int | None = None
    cname: str | None = None
    uid: str | None = None
    sequence: int | None = None
    sendts: int | None = None
    service_type: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    # marshmallow's error messages, keyed like Agora's JSON; empty when the callback is valid.
    errors: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_known_type(self) -> bool:
        return EventType.known(self.event_type)

    @property
    def is_valid(self) -> bool:
        return not self.errors

    @property
    def is_console_test(self) -> bool:
        return is_console_test(self.cname, self.uid)

    @property
    def needs_follow_up(self) -> bool:
        return self.event_type in FOLLOW_UP_EVENTS and not self.is_console_test

    @property
    def upload_status(self) -> UploadStatus | None:
        return UPLOAD_STATUS_BY_EVENT.get(self.event_type)

    @property
    def progress(self) -> int | None:
        """Upload progress 0..10000 of an uploading_progress event."""
        if self.event_type != EventType.UPLOADING_PROGRESS:
            return None
        return _json_integer(self.details.get("progress"))

    @property
    def files(self) -> tuple[RecordedFile, ...] | None:
        """The file list this event reports, or None when it reports none."""
        if self.event_type not in FILE_LIST_EVENTS:
            return None
        files = self.details.get("file_list")
        if not isinstance(files, list | tuple):
            return None
        return tuple(f for f in files if isinstance(f, RecordedFile))

    @property
    def detail_status(self) -> int | None:
        return _json_integer(self.details.get("status"))


def _json_integer(value: Any) -> int | None:
    """A JSON integer of the details, or None. Not schemas.whole_number, which also takes
    the string of one through marshmallow: this runs on every callback. Flagged details are
    kept as they came, where a JSON true or false is a bool, which Python counts as an int:
    as the store's argument it failed the write (a 503 to every resend) or read a false
    status as 0, normal."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None
