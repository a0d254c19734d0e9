"""webhook.events: the event-type vocabulary agrees with Agora's documented examples."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tests.conftest import example_files, load_example
from webhook.events import (
    FILE_LIST_EVENTS,
    FOLLOW_UP_EVENTS,
    Callback,
    EventType,
    is_console_test,
)


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.stem)
def test_msg_name_is_the_documented_msg_name(path: Path) -> None:
    body = load_example(path.name)

    assert EventType(body["eventType"]).msg_name == body["payload"]["details"]["msgName"]


def test_every_event_type_has_a_documented_example() -> None:
    documented = {load_example(p.name)["eventType"] for p in example_files()}

    assert documented == {int(t) for t in EventType}


@pytest.mark.parametrize("event_type", [31, 32, 1, 2, 11, 12])
def test_events_that_need_a_worker_are_followed_up(event_type: int) -> None:
    assert event_type in FOLLOW_UP_EVENTS


@pytest.mark.parametrize("event_type", [33, 43, 44])
def test_progress_ticks_and_stream_state_changes_are_not_followed_up(event_type: int) -> None:
    assert event_type not in FOLLOW_UP_EVENTS


def test_follow_up_and_file_list_events_are_all_known() -> None:
    assert all(EventType.known(t) for t in FOLLOW_UP_EVENTS | FILE_LIST_EVENTS)


def test_known_recognises_only_documented_values() -> None:
    assert EventType.known(31)
    assert not EventType.known(999)


def test_a_callback_needs_follow_up_when_its_type_does() -> None:
    assert Callback(notice_id="n", event_type=31, sid="s").needs_follow_up
    assert not Callback(notice_id="n", event_type=33, sid="s").needs_follow_up


def test_progress_is_read_only_from_uploading_progress_events() -> None:
    details = {"progress": 5000}

    assert Callback(notice_id="n", event_type=33, sid="s", details=details).progress == 5000
    assert Callback(notice_id="n", event_type=31, sid="s", details=details).progress is None


@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_progress_or_status_is_no_number(value: bool) -> None:
    # A flagged callback keeps its details as they came, and JSON's true is not 1.
    details = {"progress": value, "status": value}

    assert Callback(notice_id="n", event_type=33, sid="s", details=details).progress is None
    assert Callback(notice_id="n", event_type=31, sid="s", details=details).detail_status is None


def test_the_console_s_test_callbacks_are_known_by_their_channel_and_uid_together() -> None:
    assert is_console_test("test_webhook", "12121212")
    assert not is_console_test("test_webhook", "527841")
    assert not is_console_test("class1024", "12121212")
    assert not is_console_test(None, None)


def test_a_console_test_of_a_follow_up_event_is_not_followed_up() -> None:
    backuped = Callback(notice_id="n", event_type=EventType.BACKUPED, sid="s")

    assert backuped.needs_follow_up
    assert not replace(backuped, cname="test_webhook", uid="12121212").needs_follow_up
