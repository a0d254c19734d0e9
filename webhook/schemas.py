"""marshmallow schemas: Agora's JSON -> events.Callback. The only place camelCase appears.

Two levels of strictness, because nothing may be lost:
- identity (noticeId, eventType, payload.sid) is required to file a callback at all; a body
  without it is refused with 400;
- everything else (envelope fields, and the details of every documented event type, each
  with its own schema) is validated, but a callback that fails is still stored, flagged
  with marshmallow's error messages. Agora may add fields and event types at any time.
The raw body is stored verbatim elsewhere, so excluding unknown keys here loses nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar, get_args

import orjson
from marshmallow import (
    EXCLUDE,
    Schema,
    ValidationError,
    fields,
    post_load,
    pre_load,
    validate,
    validates_schema,
)

from webhook.errors import PayloadError
from webhook.events import Callback, EventType, RecordedFile
from webhook.recordings import State
from webhook.schema_compiler import CompiledSchema

# Ids become parts of Redis keys and log lines: printable, bounded, no whitespace, and no
# braces (a brace in a sid would break the {sid} Cluster hash tag of its keys).
ID_PATTERN = re.compile(r"\A[\x21-\x7a|~]{1,256}\Z")
CLOUD_RECORDING_PRODUCT_ID = 3


class WholeNumber(fields.Integer):
    """An integer, or the string of one (Agora's older callbacks sent `sequence` as a
    string); never a float. marshmallow's Integer truncates: 5.9 would be sequence 5, and a
    copy of event 5 besides."""

    # What schema_compiler may return unchanged: an int passes as it is (its validators,
    # this range included, still run).
    plain_type = int
    # What orjson, which writes our JSON (the file list, the API), can encode. JSON
    # integers within 64 bits are all orjson parses, so only a string can go beyond.
    STORABLE: ClassVar = validate.Range(
        -(2**63), 2**64 - 1, error="Cannot be stored: beyond 64 bits."
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validators.insert(0, self.STORABLE)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, float):
            raise self.make_error("invalid")
        return int(super()._deserialize(value, attr, data, **kwargs))


class _Strict(Schema):
    class Meta:
        unknown = EXCLUDE


def _rename(data: Any, aliases: Mapping[str, str]) -> Any:
    """Accept both spellings Agora's sources use for one key (e.g. filename/fileName)."""
    if not isinstance(data, dict) or not any(alias in data for alias in aliases):
        return data  # the usual case, on every callback: no copy
    renamed = dict(data)
    for alias, key in aliases.items():
        if alias in renamed and key not in renamed:
            renamed[key] = renamed.pop(alias)
    return renamed


# --- file lists -------------------------------------------------------------------------


class RecordedFileSchema(_Strict):
    """An entry of uploaded/backuped/web_recorder_stopped fileList."""

    file_name = fields.String(data_key="fileName", required=True)
    track_type = fields.String(data_key="trackType")
    uid = fields.String()
    mixed_all_user = fields.Boolean(data_key="mixedAllUser")
    is_playable = fields.Boolean(data_key="isPlayable")
    slice_start_ms = WholeNumber(data_key="sliceStartTime")

    @pre_load
    def accept_lowercase_filename(self, data: Any, **_: Any) -> Any:
        return _rename(data, {"filename": "fileName"})

    @post_load
    def to_recorded_file(self, data: dict[str, Any], **_: Any) -> RecordedFile:
        return RecordedFile(**data)


class FileNameSchema(_Strict):
    file_name = fields.String(data_key="fileName", required=True)

    @pre_load
    def accept_lowercase_filename(self, data: Any, **_: Any) -> Any:
        return _rename(data, {"filename": "fileName"})


# --- details, one schema per documented event type -------------------------------------


class DetailsSchema(_Strict):
    """Common to every event: details.msgName, which must match the eventType."""

    event_type: ClassVar[EventType]
    msg_name = fields.String(data_key="msgName", required=True)

    @validates_schema
    def msg_name_matches_event_type(self, data: dict[str, Any], **_: Any) -> None:
        expected = self.event_type.msg_name
        if data.get("msg_name") not in (None, expected):
            raise ValidationError(f"expected {expected!r} for this eventType", "msgName")


class CloudRecordingErrorDetails(DetailsSchema):
    event_type = EventType.CLOUD_RECORDING_ERROR
    module = WholeNumber(required=True)
    error_level = WholeNumber(data_key="errorLevel", validate=validate.Range(1, 5))
    error_code = WholeNumber(data_key="errorCode", required=True)
    stat = WholeNumber()
    error_msg = fields.String(data_key="errorMsg")


class CloudRecordingWarningDetails(DetailsSchema):
    event_type = EventType.CLOUD_RECORDING_WARNING
    module = WholeNumber(required=True)
    warn_code = WholeNumber(data_key="warnCode", required=True)


class StatusUpdateDetails(DetailsSchema):
    event_type = EventType.CLOUD_RECORDING_STATUS_UPDATE
    status = WholeNumber(required=True)
    # EN docs: 0 individual, 1 composite; CN docs: the reverse. Both readings are accepted.
    recording_mode = WholeNumber(data_key="recordingMode", validate=validate.OneOf((0, 1)))
    file_list = fields.String(data_key="fileList")


class FileInfosDetails(DetailsSchema):
    event_type = EventType.CLOUD_RECORDING_FILE_INFOS
    file_list = fields.String(data_key="fileList", required=True)


class SessionExitDetails(DetailsSchema):
    event_type = EventType.SESSION_EXIT
    exit_status = WholeNumber(data_key="exitStatus", required=True)


class SessionFailoverDetails(DetailsSchema):
    event_type = EventType.SESSION_FAILOVER
    new_uid = WholeNumber(data_key="newUid", required=True)


class StatusDetails(DetailsSchema):
    status = WholeNumber(required=True)


class UploaderStartedDetails(StatusDetails):
    event_type = EventType.UPLOADER_STARTED


class UploadedDetails(StatusDetails):
    event_type = EventType.UPLOADED
    # Absent in web page recording mode.
    file_list = fields.List(fields.Nested(RecordedFileSchema), data_key="fileList")


class BackupedDetails(UploadedDetails):
    event_type = EventType.BACKUPED


class UploadingProgressDetails(DetailsSchema):
    event_type = EventType.UPLOADING_PROGRESS
    progress = WholeNumber(required=True, validate=validate.Range(0, 10000))


class RecorderStartedDetails(StatusDetails):
    event_type = EventType.RECORDER_STARTED


class RecorderLeaveDetails(DetailsSchema):
    event_type = EventType.RECORDER_LEAVE
    # A bit mask (a real callback carried 24 = 16 + 8).
    leave_code = WholeNumber(data_key="leaveCode", required=True, validate=validate.Range(0))


class RecorderSliceStartDetails(DetailsSchema):
    event_type = EventType.RECORDER_SLICE_START
    start_utc_ms = WholeNumber(data_key="startUtcMs", required=True)
    discontinue_utc_ms = WholeNumber(data_key="discontinueUtcMs")
    mixed_all_user = fields.Boolean(data_key="mixedAllUser")
    stream_uid = fields.String(data_key="streamUid")
    track_type = fields.String(data_key="trackType")


class StreamStateDetails(DetailsSchema):
    stream_uid = fields.String(data_key="streamUid", required=True)
    state = WholeNumber(required=True, validate=validate.OneOf((0, 1)))
    utc_ms = WholeNumber(data_key="UtcMs", required=True)

    @pre_load
    def accept_lowercase_utc_ms(self, data: Any, **_: Any) -> Any:
        return _rename(data, {"utcMs": "UtcMs"})


class AudioStreamStateDetails(StreamStateDetails):
    event_type = EventType.RECORDER_AUDIO_STREAM_STATE_CHANGED


class VideoStreamStateDetails(StreamStateDetails):
    event_type = EventType.RECORDER_VIDEO_STREAM_STATE_CHANGED


class SnapshotFileDetails(DetailsSchema):
    event_type = EventType.RECORDER_SNAPSHOT_FILE
    file_name = fields.String(data_key="fileName", required=True)

    @pre_load
    def accept_lowercase_filename(self, data: Any, **_: Any) -> Any:
        return _rename(data, {"filename": "fileName"})


class AliVodInfoSchema(_Strict):
    video_id = fields.String(data_key="videoId", required=True)


class VodStartedDetails(DetailsSchema):
    event_type = EventType.VOD_STARTED
    ali_vod_info = fields.Nested(AliVodInfoSchema, data_key="aliVodInfo", required=True)


class VodTriggeredDetails(DetailsSchema):
    event_type = EventType.VOD_TRIGGERED


class WebRecorderStartedDetails(DetailsSchema):
    event_type = EventType.WEB_RECORDER_STARTED
    recorder_start_ms = WholeNumber(data_key="recorderStartTime")


class WebRecorderStoppedDetails(DetailsSchema):
    event_type = EventType.WEB_RECORDER_STOPPED
    code = WholeNumber(required=True)
    message = fields.String()
    details = fields.String()
    file_list = fields.List(fields.Nested(RecordedFileSchema), data_key="fileList")


class WebRecorderCapabilityLimitDetails(DetailsSchema):
    event_type = EventType.WEB_RECORDER_CAPABILITY_LIMIT
    limit_type = fields.String(data_key="limitType", required=True)


class WebRecorderReloadDetails(DetailsSchema):
    event_type = EventType.WEB_RECORDER_RELOAD
    reason = fields.String(required=True)


class TranscoderStartedDetails(DetailsSchema):
    event_type = EventType.TRANSCODER_STARTED


class TranscodedUidSchema(_Strict):
    uid = fields.String(required=True)
    result = fields.String(required=True)
    file_list = fields.List(fields.Nested(FileNameSchema), data_key="fileList")


class TranscoderCompletedDetails(DetailsSchema):
    event_type = EventType.TRANSCODER_COMPLETED
    result = fields.String(required=True)
    uids = fields.List(fields.Nested(TranscodedUidSchema))


class DownloadFailedDetails(DetailsSchema):
    event_type = EventType.DOWNLOAD_FAILED
    vendor = WholeNumber(required=True)
    region = WholeNumber()
    bucket = fields.String(required=True)
    # One string of ';'-separated names.
    file_name = fields.String(data_key="fileName", required=True)

    @pre_load
    def accept_lowercase_filename(self, data: Any, **_: Any) -> Any:
        return _rename(data, {"filename": "fileName"})


class StringOrNumber(fields.Field[str]):
    """Agora types rtmp_publish_status.status as Number but documents string values."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, str | int) and not isinstance(value, bool):
            return str(value)
        raise ValidationError("Not a valid string or number.")


class RtmpPublishStatusDetails(DetailsSchema):
    event_type = EventType.RTMP_PUBLISH_STATUS
    rtmp_url = fields.String(data_key="rtmpUrl", required=True)
    status = StringOrNumber(required=True)


class PostponeTranscodeFinalResultDetails(DetailsSchema):
    event_type = EventType.POSTPONE_TRANSCODE_FINAL_RESULT
    result = fields.String(required=True)
    file_list = fields.List(fields.Nested(FileNameSchema), data_key="fileList")


# Compiled: a callback's load takes the fast path unless something is off (see
# webhook.schema_compiler); the outcome is always marshmallow's.
DETAILS_SCHEMAS: Mapping[int, CompiledSchema[dict[str, Any]]] = {
    schema.event_type: CompiledSchema(schema)
    for schema in (
        CloudRecordingErrorDetails(),
        CloudRecordingWarningDetails(),
        StatusUpdateDetails(),
        FileInfosDetails(),
        SessionExitDetails(),
        SessionFailoverDetails(),
        UploaderStartedDetails(),
        UploadedDetails(),
        BackupedDetails(),
        UploadingProgressDetails(),
        RecorderStartedDetails(),
        RecorderLeaveDetails(),
        RecorderSliceStartDetails(),
        AudioStreamStateDetails(),
        VideoStreamStateDetails(),
        SnapshotFileDetails(),
        VodStartedDetails(),
        VodTriggeredDetails(),
        WebRecorderStartedDetails(),
        WebRecorderStoppedDetails(),
        WebRecorderCapabilityLimitDetails(),
        WebRecorderReloadDetails(),
        TranscoderStartedDetails(),
        TranscoderCompletedDetails(),
        DownloadFailedDetails(),
        RtmpPublishStatusDetails(),
        PostponeTranscodeFinalResultDetails(),
    )
}


# --- envelope ---------------------------------------------------------------------------

# The noticeId of callbacks in the format of RESTful API 1.2.0 and earlier.
LEGACY_NOTICE_ID = "notificationId"


class PayloadSchema(_Strict):
    cname = fields.String(required=True)
    # A string per the docs; the redundant-copy identity uses it, so no coercion here.
    uid = fields.String(required=True)
    # Its format was checked with the identity, before this schema runs.
    sid = fields.String(required=True)
    sequence = WholeNumber(required=True, validate=validate.Range(0))
    sendts = WholeNumber(required=True)
    service_type = WholeNumber(data_key="serviceType", required=True)
    service_scene = fields.String(data_key="serviceScene")
    details = fields.Dict(required=True)


class CallbackSchema(_Strict):
    """Agora's callback envelope; details are checked separately, by eventType.

    Also the legacy one (RESTful API 1.2.0 and earlier, FACTS §2.2): notificationId for
    noticeId, no productId, sequence as a string (WholeNumber), eventMs and noticeLevel
    (unknown fields, kept in the body)."""

    notice_id = fields.String(data_key="noticeId", required=True)
    product_id = WholeNumber(
        data_key="productId",
        validate=validate.Equal(CLOUD_RECORDING_PRODUCT_ID, error="must be 3 (Cloud Recording)"),
    )
    event_type = WholeNumber(data_key="eventType", required=True, strict=True)
    notify_ms = WholeNumber(data_key="notifyMs", required=True)
    # Not in the cloud-recording docs but seen in real callbacks; payload.sid is the key.
    sid = fields.String()
    payload = fields.Nested(PayloadSchema, required=True)

    @pre_load
    def accept_the_legacy_notification_id(self, data: Any, **_: Any) -> Any:
        return _rename(data, {LEGACY_NOTICE_ID: "noticeId"})

    @validates_schema
    def top_level_sid_matches_payload(self, data: dict[str, Any], **_: Any) -> None:
        top, inner = data.get("sid"), data.get("payload", {}).get("sid")
        if top is not None and inner is not None and top != inner:
            raise ValidationError("differs from payload.sid", "sid")


CALLBACK_SCHEMA: CompiledSchema[dict[str, Any]] = CompiledSchema(CallbackSchema())


def _identity(doc: Any) -> tuple[str, int, str, Mapping[str, Any]]:
    """noticeId, eventType, payload.sid and payload, or a PayloadError naming what is wrong."""
    if not isinstance(doc, dict):
        raise PayloadError("the body must be a JSON object")
    problems: dict[str, Any] = {}
    notice_id = doc.get("noticeId", doc.get(LEGACY_NOTICE_ID))
    if not isinstance(notice_id, str) or not ID_PATTERN.fullmatch(notice_id):
        problems["noticeId"] = [
            "required (or the legacy notificationId): a non-empty string of at most 256 "
            "printable characters"
        ]
    event_type = doc.get("eventType")
    if not isinstance(event_type, int) or isinstance(event_type, bool):
        problems["eventType"] = ["required: an integer"]
    payload = doc.get("payload")
    if not isinstance(payload, dict):
        problems["payload"] = ["required: an object with sid"]
        payload = {}
    else:
        sid = payload.get("sid")
        if not isinstance(sid, str) or not ID_PATTERN.fullmatch(sid):
            problems["payload"] = {
                "sid": ["required: a non-empty string of at most 256 printable characters"]
            }
    if problems:
        raise PayloadError("the callback lacks the fields that identify it", errors=problems)
    return notice_id, event_type, payload["sid"], payload  # type: ignore[return-value]  # checked above


def _load_details(event_type: int, details: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    schema = DETAILS_SCHEMAS.get(event_type)
    if schema is None or not isinstance(details, dict):
        # Unknown types are stored as they came; a non-object details is reported by the
        # envelope schema.
        return (dict(details) if isinstance(details, dict) else {}), {}
    try:
        return schema.load(details), {}
    except ValidationError as err:
        return dict(details), _as_dict(err.messages)


def _as_dict(messages: Any) -> dict[str, Any]:
    return messages if isinstance(messages, dict) else {"_schema": messages}


_WHOLE_NUMBER = WholeNumber()


def whole_number(value: Any) -> int | None:
    """A number of Agora's JSON read as its field is validated (an integer or the string of
    one, as the legacy sequence was; never a bool or a float), or None. For readers of a
    stored body, such as a flagged envelope here or the workers' alert rules."""
    try:
        loaded: int = _WHOLE_NUMBER.deserialize(value)
    except ValidationError:
        return None
    return loaded


def _lenient_str(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def load_callback(doc: Any) -> Callback:
    """Turn a parsed JSON body into a Callback, keeping validation errors on it.

    Raises:
        PayloadError: the body lacks noticeId, an integer eventType or payload.sid.
    """
    notice_id, event_type, sid, payload = _identity(doc)
    details, detail_errors = _load_details(event_type, payload.get("details"))
    try:
        envelope = CALLBACK_SCHEMA.load(doc)
        errors: dict[str, Any] = {}
    except ValidationError as err:
        envelope = None
        errors = _as_dict(err.messages)
    if detail_errors:
        inner = errors.setdefault("payload", {})
        if isinstance(inner, dict):
            inner["details"] = detail_errors
    if envelope is not None:
        body = envelope["payload"]
        return Callback(
            notice_id=notice_id,
            event_type=event_type,
            sid=sid,
            product_id=envelope.get("product_id"),  # absent in the legacy format
            notify_ms=envelope["notify_ms"],
            cname=body["cname"],
            uid=body["uid"],
            sequence=body["sequence"],
            sendts=body["sendts"],
            service_type=body["service_type"],
            details=details,
            errors=errors,
        )
    sequence = whole_number(payload.get("sequence"))
    return Callback(
        notice_id=notice_id,
        event_type=event_type,
        sid=sid,
        product_id=whole_number(doc.get("productId")),
        notify_ms=whole_number(doc.get("notifyMs")),
        cname=_lenient_str(payload.get("cname")),
        uid=_lenient_str(payload.get("uid")),
        sequence=sequence if sequence is not None and sequence >= 0 else None,
        sendts=whole_number(payload.get("sendts")),
        service_type=whole_number(payload.get("serviceType")),
        details=details,
        errors=errors,
    )


# --- the app's calls, forwarded to /api/v1/recordings -----------------------------------


class JsonObject(fields.Dict):
    """A JSON object we can store and read back: orjson writes integers up to 64 bits and
    254 levels of nesting, so anything beyond is refused here with a 400, saying which,
    rather than failing later."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        loaded = super()._deserialize(value, attr, data, **kwargs)  # type: ignore[no-untyped-call]  # unannotated upstream
        try:
            orjson.dumps(loaded)
        except orjson.JSONEncodeError as err:
            # "Integer exceeds 64-bit range" or "Recursion limit reached".
            raise ValidationError(f"Cannot be stored: {err}.") from None
        return loaded


class RecordingStartSchema(_Strict):
    """POST /api/v1/recordings: the start the app made, in Agora's own vocabulary."""

    resource_id = fields.String(
        data_key="resourceId", required=True, validate=validate.Length(1, 2048)
    )
    sid = fields.String(
        required=True,
        validate=validate.Regexp(ID_PATTERN, error="must be 1-256 printable characters"),
    )
    cname = fields.String(required=True, validate=validate.Length(1, 1024))
    uid = StringOrNumber(required=True)
    mode = fields.String(required=True, validate=validate.OneOf(("individual", "mix", "web")))
    client_request = JsonObject(data_key="clientRequest", load_default=dict)


class RecordingStopSchema(_Strict):
    """POST /api/v1/recordings/<sid>/stop: what Agora answered the app's stop."""

    http_status = WholeNumber(
        data_key="httpStatus", required=True, strict=True, validate=validate.Range(100, 599)
    )
    response = JsonObject(required=True)


RECORDING_START_SCHEMA = RecordingStartSchema()
RECORDING_STOP_SCHEMA = RecordingStopSchema()


class AlertQuerySchema(_Strict):
    """GET /api/v1/alerts query parameters."""

    state = fields.String(
        load_default="open", validate=validate.OneOf(("open", "acknowledged", "resolved"))
    )
    kind = fields.String(validate=validate.Length(1, 64))
    limit = WholeNumber(load_default=100, validate=validate.Range(1, 1000))


ALERT_QUERY_SCHEMA = AlertQuerySchema()


# --- the read API's query parameters ----------------------------------------------------


# A cursor's score: a Unix-ms instant, in ASCII digits. str.isdigit() also takes "²",
# which int() refuses, and int() refuses more than 4300 digits: both were a 500.
_CURSOR_SCORE = re.compile(r"\A[0-9]{1,19}\Z")


class Cursor(fields.Field[tuple[int, str]]):
    """An opaque page cursor: "<score>.<sid>" (the last row of the previous page)."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Any, **kwargs: Any
    ) -> tuple[int, str]:
        score, _, sid = str(value).partition(".")
        if not _CURSOR_SCORE.fullmatch(score) or not ID_PATTERN.fullmatch(sid):
            raise ValidationError("Not a cursor this API returned.")
        return int(score), sid


def encode_cursor(score: int, sid: str) -> str:
    """The cursor Cursor reads back: the position of the last row of a page."""
    return f"{score}.{sid}"


# The lifecycle states, spelled once in webhook.recordings.
STATES: tuple[str, ...] = get_args(State)


class RecordingListQuerySchema(_Strict):
    """GET /api/v1/recordings query parameters."""

    state = fields.String(validate=validate.OneOf(STATES))
    cname = fields.String(validate=validate.Length(1, 1024))
    since = WholeNumber(validate=validate.Range(0), metadata={"description": "Unix ms"})
    cursor = Cursor()
    limit = WholeNumber(load_default=50, validate=validate.Range(1, 500))


RECORDING_LIST_QUERY_SCHEMA = RecordingListQuerySchema()


class RejectedQuerySchema(_Strict):
    """GET /api/v1/rejected query parameters."""

    limit = WholeNumber(load_default=50, validate=validate.Range(1, 1000))


REJECTED_QUERY_SCHEMA = RejectedQuerySchema()
