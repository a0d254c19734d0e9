"""webhook.schemas.load_callback: identity is required, everything else is only flagged."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import example_files, load_example, varied
from webhook.errors import PayloadError
from webhook.events import Callback, RecordedFile
from webhook.schemas import DETAILS_SCHEMAS, load_callback


def with_details(body: dict[str, Any], **details: Any) -> dict[str, Any]:
    """A deep copy of body with payload.details fields replaced."""
    result = copy.deepcopy(body)
    result["payload"]["details"].update(details)
    return result


def without(body: dict[str, Any], *path: str) -> dict[str, Any]:
    """A deep copy of body with the key at path (e.g. "payload", "sid") removed."""
    result = copy.deepcopy(body)
    parent = result
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    return result


def identity_errors(doc: Any) -> dict[str, Any]:
    with pytest.raises(PayloadError) as caught:
        load_callback(doc)
    assert caught.value.status == 400
    assert caught.value.reason == "invalid_payload"
    return caught.value.errors


# --- every documented example loads -----------------------------------------------------


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.stem)
def test_every_documented_example_loads_without_errors(path: Path) -> None:
    body = load_example(path.name)

    callback = load_callback(body)

    assert callback.errors == {}
    assert callback.is_valid
    assert callback.is_known_type
    assert callback.notice_id == body["noticeId"]
    assert callback.event_type == body["eventType"]
    assert callback.sid == body["payload"]["sid"]
    assert callback.cname == body["payload"]["cname"]
    assert callback.uid == body["payload"]["uid"]
    assert callback.sequence == body["payload"]["sequence"]
    assert callback.sendts == body["payload"]["sendts"]
    assert callback.notify_ms == body["notifyMs"]
    assert callback.product_id == 3


# --- identity: refused with 400 ---------------------------------------------------------


def test_a_callback_without_notice_id_is_refused() -> None:
    errors = identity_errors(without(load_example("31_"), "noticeId"))

    assert set(errors) == {"noticeId"}


def test_a_notice_id_with_a_space_is_refused() -> None:
    errors = identity_errors(load_example("31_") | {"noticeId": "abc def"})

    assert set(errors) == {"noticeId"}


def test_a_notice_id_longer_than_256_characters_is_refused() -> None:
    errors = identity_errors(load_example("31_") | {"noticeId": "a" * 257})

    assert set(errors) == {"noticeId"}


def test_a_notice_id_with_a_trailing_newline_is_refused() -> None:
    errors = identity_errors(load_example("31_") | {"noticeId": "abc\n"})

    assert set(errors) == {"noticeId"}


def test_a_callback_without_event_type_is_refused() -> None:
    errors = identity_errors(without(load_example("31_"), "eventType"))

    assert set(errors) == {"eventType"}


def test_a_boolean_event_type_is_refused() -> None:
    errors = identity_errors(load_example("31_") | {"eventType": True})

    assert set(errors) == {"eventType"}


def test_a_string_event_type_is_refused() -> None:
    errors = identity_errors(load_example("31_") | {"eventType": "31"})

    assert set(errors) == {"eventType"}


def test_a_callback_without_payload_is_refused() -> None:
    errors = identity_errors(without(load_example("31_"), "payload"))

    assert set(errors) == {"payload"}


def test_a_payload_that_is_not_an_object_is_refused() -> None:
    errors = identity_errors(load_example("31_") | {"payload": ["sid"]})

    assert set(errors) == {"payload"}


def test_a_callback_without_payload_sid_is_refused() -> None:
    errors = identity_errors(without(load_example("31_"), "payload", "sid"))

    assert set(errors) == {"payload"}
    assert set(errors["payload"]) == {"sid"}


def test_an_empty_payload_sid_is_refused() -> None:
    errors = identity_errors(varied(load_example("31_"), sid=""))

    assert set(errors["payload"]) == {"sid"}


@pytest.mark.parametrize("doc", [[], "callback", 31, None], ids=repr)
def test_a_body_that_is_not_an_object_is_refused(doc: Any) -> None:
    errors = identity_errors(doc)

    # The message says why; there is no field to name.
    assert errors == {}


def test_every_identity_problem_is_named_at_once() -> None:
    body = without(without(load_example("31_"), "noticeId"), "eventType")

    assert set(identity_errors(body)) == {"noticeId", "eventType"}


# --- unknown event types ----------------------------------------------------------------


def test_an_unknown_event_type_loads_without_errors() -> None:
    body = load_example("31_") | {"eventType": 999}

    callback = load_callback(body)

    assert callback.errors == {}
    assert callback.is_known_type is False
    assert callback.needs_follow_up is False
    # Stored as it came, in Agora's spelling.
    assert callback.details == body["payload"]["details"]


# --- details: stored, flagged -----------------------------------------------------------


def detail_errors(callback: Callback) -> dict[str, Any]:
    assert set(callback.errors) == {"payload"}
    assert set(callback.errors["payload"]) == {"details"}
    errors: dict[str, Any] = callback.errors["payload"]["details"]
    return errors


def test_a_non_numeric_progress_is_flagged() -> None:
    callback = load_callback(with_details(load_example("33_"), progress="x"))

    assert set(detail_errors(callback)) == {"progress"}
    assert callback.progress is None


def test_a_progress_above_10000_is_flagged() -> None:
    callback = load_callback(with_details(load_example("33_"), progress=10001))

    assert set(detail_errors(callback)) == {"progress"}


def test_the_progress_bounds_are_valid() -> None:
    for progress in (0, 10000):
        callback = load_callback(with_details(load_example("33_"), progress=progress))
        assert callback.errors == {}
        assert callback.progress == progress


def test_an_uploaded_event_without_status_is_flagged() -> None:
    body = without(load_example("31_"), "payload", "details", "status")

    callback = load_callback(body)

    assert set(detail_errors(callback)) == {"status"}
    # Still filed under its session, with the envelope read.
    assert callback.sid == body["payload"]["sid"]
    assert callback.sequence == body["payload"]["sequence"]


def test_a_msg_name_that_does_not_match_the_event_type_is_flagged() -> None:
    callback = load_callback(with_details(load_example("31_"), msgName="backuped"))

    assert set(detail_errors(callback)) == {"msgName"}


def test_a_missing_msg_name_is_flagged() -> None:
    callback = load_callback(without(load_example("33_"), "payload", "details", "msgName"))

    assert set(detail_errors(callback)) == {"msgName"}


def test_a_file_list_entry_without_a_file_name_is_flagged() -> None:
    body = load_example("31_")
    del body["payload"]["details"]["fileList"][1]["fileName"]

    callback = load_callback(body)

    assert detail_errors(callback) == {
        "fileList": {1: {"fileName": ["Missing data for required field."]}}
    }


def test_flagged_details_are_kept_as_they_came() -> None:
    body = with_details(load_example("33_"), progress="x")

    callback = load_callback(body)

    assert callback.details == body["payload"]["details"]


def test_a_stream_state_outside_0_and_1_is_flagged() -> None:
    callback = load_callback(with_details(load_example("43_"), state=2))

    assert set(detail_errors(callback)) == {"state"}


def test_details_that_are_not_an_object_are_flagged_by_the_envelope() -> None:
    body = varied(load_example("31_"), details=["uploaded"])

    callback = load_callback(body)

    assert set(callback.errors["payload"]) == {"details"}
    assert callback.details == {}


# --- both spellings ---------------------------------------------------------------------


def test_web_recorder_stopped_accepts_lowercase_filename() -> None:
    body = load_example("71_")
    names = [f["filename"] for f in body["payload"]["details"]["fileList"]]

    callback = load_callback(body)

    assert callback.errors == {}
    assert callback.files is not None
    assert [f.file_name for f in callback.files] == names


def test_uploaded_accepts_lowercase_filename() -> None:
    body = load_example("31_")
    for entry in body["payload"]["details"]["fileList"]:
        entry["filename"] = entry.pop("fileName")

    callback = load_callback(body)

    assert callback.errors == {}
    assert callback.files is not None
    assert len(callback.files) == 4


def test_web_recorder_stopped_accepts_camel_case_file_name() -> None:
    body = load_example("71_")
    for entry in body["payload"]["details"]["fileList"]:
        entry["fileName"] = entry.pop("filename")

    callback = load_callback(body)

    assert callback.errors == {}
    assert callback.files is not None
    assert len(callback.files) == 2


@pytest.mark.parametrize("prefix", ["43_", "44_"])
def test_stream_state_events_accept_both_utc_ms_spellings(prefix: str) -> None:
    upper = load_example(prefix)
    lower = copy.deepcopy(upper)
    details = lower["payload"]["details"]
    details["utcMs"] = details.pop("UtcMs")

    for body in (upper, lower):
        callback = load_callback(body)
        assert callback.errors == {}
        assert callback.details["utc_ms"] == upper["payload"]["details"]["UtcMs"]


@pytest.mark.parametrize("prefix", ["43_", "44_"])
def test_stream_state_events_without_utc_ms_are_flagged(prefix: str) -> None:
    callback = load_callback(without(load_example(prefix), "payload", "details", "UtcMs"))

    assert set(detail_errors(callback)) == {"UtcMs"}


def lowercase_filename(entries: list[dict[str, Any]]) -> None:
    for entry in entries:
        entry["filename"] = entry.pop("fileName")


# Where Agora's sources disagree (FACTS §3 and §9), each reading, on an example.
READINGS: dict[str, tuple[str, Any]] = {
    "recordingMode 0 (EN individual, CN composite)": (
        "03_", lambda b: b["payload"]["details"].update(recordingMode=0)),
    "recordingMode 1 (EN composite, CN individual)": (
        "03_", lambda b: b["payload"]["details"].update(recordingMode=1)),
    "45 from the recorder module (EN)": ("45_", lambda b: b["payload"].update(serviceType=1)),
    "45 from the uploader module (CN)": ("45_", lambda b: b["payload"].update(serviceType=2)),
    "45 filename": ("45_", lambda b: lowercase_filename([b["payload"]["details"]])),
    "90 filename (CN)": ("90_", lambda b: lowercase_filename([b["payload"]["details"]])),
    "81 filename": ("81_", lambda b: lowercase_filename(
        b["payload"]["details"]["uids"][0]["fileList"])),
    "1001 filename": ("1001_", lambda b: lowercase_filename(b["payload"]["details"]["fileList"])),
    "backuped in web mode, no fileList": ("32_", lambda b: b["payload"]["details"].pop("fileList")),
    "70 without recorderStartTime (CN)": (
        "70_", lambda b: b["payload"]["details"].pop("recorderStartTime")),
    "sliceStartTime in seconds (query/stop docs)": ("31_", lambda b: [
        f.update(sliceStartTime=f["sliceStartTime"] // 1000)
        for f in b["payload"]["details"]["fileList"]]),
    "no serviceScene (EN)": ("40_", lambda b: b["payload"].pop("serviceScene", None)),
}  # fmt: skip


@pytest.mark.parametrize("reading", READINGS)
def test_each_documented_reading_loads_without_errors_on_both_paths(reading: str) -> None:
    prefix, change = READINGS[reading]
    body = load_example(prefix)
    change(body)
    details = body["payload"]["details"]
    schema = DETAILS_SCHEMAS[body["eventType"]]

    assert load_callback(body).errors == {}
    assert schema.load_fast(copy.deepcopy(details)) == schema.schema.load(details)


# --- top-level sid ----------------------------------------------------------------------


def test_a_callback_without_top_level_sid_is_valid() -> None:
    body = without(load_example("31_"), "sid")

    callback = load_callback(body)

    assert callback.errors == {}
    assert callback.sid == body["payload"]["sid"]


def test_a_top_level_sid_differing_from_payload_sid_is_flagged() -> None:
    body = load_example("31_") | {"sid": "another-session"}

    callback = load_callback(body)

    assert set(callback.errors) == {"sid"}
    # payload.sid is the key the callback is filed under.
    assert callback.sid == body["payload"]["sid"]
    assert callback.cname == body["payload"]["cname"]


# --- file lists -------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["31_", "32_"])
def test_uploaded_and_backuped_files_become_recorded_files(prefix: str) -> None:
    body = load_example(prefix)
    entries = body["payload"]["details"]["fileList"]

    callback = load_callback(body)

    assert isinstance(callback.files, tuple)
    assert callback.files == tuple(
        RecordedFile(
            file_name=e["fileName"],
            track_type=e["trackType"],
            uid=e["uid"],
            mixed_all_user=e["mixedAllUser"],
            is_playable=e["isPlayable"],
            slice_start_ms=e["sliceStartTime"],
        )
        for e in entries
    )


def test_uploaded_and_backuped_carry_their_upload_status() -> None:
    assert load_callback(load_example("31_")).upload_status == "uploaded"
    assert load_callback(load_example("32_")).upload_status == "backuped"
    assert load_callback(load_example("33_")).upload_status is None


def test_web_mode_uploaded_without_file_list_is_valid_and_reports_no_files() -> None:
    body = without(load_example("31_"), "payload", "details", "fileList")

    callback = load_callback(body)

    assert callback.errors == {}
    assert callback.files is None
    assert callback.detail_status == 0


def test_an_empty_file_list_reports_no_files_as_an_empty_tuple() -> None:
    body = load_example("31_")
    body["payload"]["details"]["fileList"] = []

    callback = load_callback(body)

    assert callback.errors == {}
    assert callback.files == ()


def test_events_without_a_file_list_report_none() -> None:
    assert load_callback(load_example("33_")).files is None


# --- rtmp status ------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["publishing", 1, "1"], ids=repr)
def test_rtmp_status_may_be_a_string_or_a_number(status: Any) -> None:
    callback = load_callback(with_details(load_example("100_"), status=status))

    assert callback.errors == {}
    assert callback.details["status"] == str(status)


@pytest.mark.parametrize("status", [True, 1.5, None, ["publishing"]], ids=repr)
def test_rtmp_status_of_another_type_is_flagged(status: Any) -> None:
    callback = load_callback(with_details(load_example("100_"), status=status))

    assert set(detail_errors(callback)) == {"status"}


# --- envelope: flagged, still built -----------------------------------------------------


def test_a_wrong_envelope_field_is_flagged_but_the_callback_is_still_built() -> None:
    body = varied(load_example("31_"), sendts="x")

    callback = load_callback(body)

    assert set(callback.errors) == {"payload"}
    assert set(callback.errors["payload"]) == {"sendts"}
    assert callback.sendts is None
    assert callback.notice_id == body["noticeId"]
    assert callback.event_type == 31
    assert callback.sid == body["payload"]["sid"]
    assert callback.product_id == 3
    assert callback.notify_ms == body["notifyMs"]
    assert callback.cname == body["payload"]["cname"]
    assert callback.uid == body["payload"]["uid"]
    assert callback.sequence == body["payload"]["sequence"]
    assert callback.service_type == body["payload"]["serviceType"]
    # The details were valid, so they are read as usual.
    assert callback.files is not None
    assert len(callback.files) == 4


def test_a_product_other_than_cloud_recording_is_flagged() -> None:
    callback = load_callback(load_example("31_") | {"productId": 1})

    assert set(callback.errors) == {"productId"}
    assert callback.product_id == 1


def test_a_negative_sequence_is_flagged_and_dropped() -> None:
    callback = load_callback(varied(load_example("31_"), sequence=-1))

    assert set(callback.errors["payload"]) == {"sequence"}
    assert callback.sequence is None


def test_a_sequence_sent_as_a_string_is_read_as_agora_s_older_callbacks_meant() -> None:
    callback = load_callback(varied(load_example("31_"), sequence="5"))

    assert callback.errors == {}
    assert callback.sequence == 5


def test_a_string_sequence_is_read_even_when_another_envelope_field_is_flagged() -> None:
    # Agora's older callbacks sent sequence as a string (FACTS §2.2); an unrelated flag
    # must not cost the callback the sequence its redundant copies are matched on.
    callback = load_callback(varied(load_example("31_"), sequence="23", sendts="x"))

    assert set(callback.errors["payload"]) == {"sendts"}
    assert callback.sequence == 23


@pytest.mark.parametrize("number", [5.9, 5.0, "5.9"])
def test_a_sequence_that_is_not_a_whole_number_is_flagged_not_truncated(number: Any) -> None:
    callback = load_callback(varied(load_example("31_"), sequence=number))

    assert set(callback.errors["payload"]) == {"sequence"}
    assert callback.sequence is None  # never taken for event 5, nor for a copy of it


def test_an_envelope_error_and_a_details_error_are_both_kept() -> None:
    body = with_details(varied(load_example("33_"), sendts="x"), progress="x")

    callback = load_callback(body)

    assert set(callback.errors["payload"]) == {"sendts", "details"}
    assert set(callback.errors["payload"]["details"]) == {"progress"}


def test_unknown_fields_are_ignored() -> None:
    body = with_details(load_example("31_") | {"newTopLevel": 1}, newDetail="x")

    assert load_callback(body).errors == {}
