"""webhook.agora_client without sockets: secret scrubbing, answer parsing, retries, errors.

A scripted requests.Session stands in for Agora; the simulator-backed tests live in
tests/integration/test_agora_client.py.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import requests

from webhook.agora_client import (
    AgoraAuthError,
    AgoraClient,
    AgoraConnectionError,
    AgoraError,
    AgoraNotFoundError,
    AgoraRateLimitedError,
    AgoraServerError,
    AlreadyStartedError,
    CallRecord,
    InvalidOperationError,
    InvalidParametersError,
    QueryResult,
    RequestNotCompletedError,
    StopResult,
    TaskConflictError,
    redact,
)

SID = "38f8e3cfdc474cd56fc1ceba380d7e1a"
RID = "JyvK8nXHuV1BE64GDkAaBGEscvtHW7v8BrQoRPCHxmeVxwY22-x-kv4GdPcjZeMzoCBUCOr9q-k6wBWMC7SaAkZ_4nO8FyTpCRmRqMbq2wsE8aJ8oxwOETyeNhr68ZcQ8RjWU9sCt9ymCOwVSZqsASmKSxHRAYGKjzu4Dbq4gdd2EhvOIcbdKr0nsv3bNXdWX9p72LSb_q0y9ht-yfA3O-A8e0s9HjiFG3i9j0LtWcgdcrnoSWUx0yXmcXe8TAtFBDhS4cyfxg2DbIVNhLcegx9B1wYjyj8RF6VLtIDRMDMNHT9DMkwc_eGXaq3o"  # noqa: E501
SECRET = "customer-secret-DO-NOT-LEAK"
STORAGE_SECRET = "storage-secret-DO-NOT-LEAK"
STORAGE_ACCESS = "storage-access-DO-NOT-LEAK"
RTC_TOKEN = "rtc-token-DO-NOT-LEAK"
FILE = f"{SID}_class1024__uid_s_57297__uid_e_audio.m3u8"

START_REQUEST: dict[str, Any] = {
    "token": RTC_TOKEN,
    "recordingConfig": {
        "channelType": 1,
        "decryptionMode": 1,
        "secret": "decryption-secret-DO-NOT-LEAK",
        "salt": "decryption-salt-DO-NOT-LEAK",
    },
    "storageConfig": {
        "vendor": 11,
        "region": 0,
        "bucket": "recordings",
        "accessKey": STORAGE_ACCESS,
        "secretKey": STORAGE_SECRET,
        "stsToken": "sts-DO-NOT-LEAK",
        "stsExpiration": 1749550000,
        "fileNamePrefix": ["rec", "class1024"],
        "extensionParams": {"endpoint": "s3.example.com", "sse": "kms", "tag": "team"},
    },
}


def answer(status: int, body: Any = None, *, text: str = "", headers: dict[str, str] | None = None):
    response = requests.Response()
    response.status_code = status
    response._content = (json.dumps(body) if body is not None else text).encode()
    response.encoding = "utf-8"
    response.headers.update(headers or {})
    return response


class ScriptedSession(requests.Session):
    """Answers requests from a script: a Response, or an exception to raise."""

    def __init__(self, *script: requests.Response | Exception) -> None:
        super().__init__()
        self.script = list(script)
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> requests.Response:
        self.calls.append((method, url, kwargs))
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


class Harness:
    def __init__(self, *script: requests.Response | Exception, max_attempts: int = 3) -> None:
        self.session = ScriptedSession(*script)
        self.records: list[CallRecord] = []
        self.sleeps: list[float] = []
        self.client = AgoraClient(
            "https://api.example.test/",
            "app-1",
            "customer-1",
            SECRET,
            session=self.session,
            on_call=self.records.append,
            sleep=self.sleeps.append,
            max_attempts=max_attempts,
        )


def ids(**extra: Any) -> dict[str, Any]:
    return {"cname": "class1024", "uid": "527841", "resourceId": RID, "sid": SID} | extra


# --- redact -----------------------------------------------------------------------------


def test_redact_drops_credentials_at_any_depth() -> None:
    body = {"clientRequest": START_REQUEST, "nested": [{"Token": "t", "kept": 1}]}

    text = json.dumps(redact(body))

    for leaked in ("DO-NOT-LEAK", '"token"', '"Token"', '"secret"', '"salt"', "stsToken"):
        assert leaked not in text
    assert redact(body)["nested"] == [{"kept": 1}]
    assert redact(body)["clientRequest"]["recordingConfig"] == {
        "channelType": 1,
        "decryptionMode": 1,
    }


def test_redact_keeps_only_where_storage_goes() -> None:
    storage = redact({"storageConfig": START_REQUEST["storageConfig"]})["storageConfig"]

    assert storage == {
        "vendor": 11,
        "region": 0,
        "bucket": "recordings",
        "fileNamePrefix": ["rec", "class1024"],
        "extensionParams": {"endpoint": "s3.example.com"},
    }


@pytest.mark.parametrize(
    ("endpoint", "kept"),
    [("https://AKIAEXAMPLE:DO-NOT-LEAK@s3.example.com/base", "https://s3.example.com/base"),
     ("AKIAEXAMPLE:DO-NOT-LEAK@s3.example.com", "s3.example.com"),
     ("https://s3.example.com:9000/?X-Amz-Signature=DO-NOT-LEAK", "https://s3.example.com:9000/"),
     ("https://s3.example.com", "https://s3.example.com")],
)  # fmt: skip
def test_redact_keeps_where_an_endpoint_is_but_not_its_credentials(
    endpoint: str, kept: str
) -> None:
    storage = {**START_REQUEST["storageConfig"], "extensionParams": {"endpoint": endpoint}}

    assert redact({"storageConfig": storage})["storageConfig"]["extensionParams"] == {
        "endpoint": kept
    }


def test_redact_leaves_its_input_alone() -> None:
    before = json.dumps(START_REQUEST, sort_keys=True)

    redact({"clientRequest": START_REQUEST})

    assert json.dumps(START_REQUEST, sort_keys=True) == before


# --- stop and query answers -------------------------------------------------------------


def test_stop_json_file_list_yields_file_names() -> None:
    body = ids(
        serverResponse={
            "fileListMode": "json",
            "fileList": [
                {"fileName": FILE, "trackType": "audio", "uid": "57297"},
                {"fileName": FILE.replace("audio", "video"), "trackType": "video"},
            ],
            "uploadingStatus": "uploaded",
        }
    )

    result = StopResult.from_response(200, body)

    assert result.file_list == (FILE, FILE.replace("audio", "video"))
    assert result.uploading_status == "uploaded"
    assert result.code is None
    assert result.raw == body


def test_stop_string_file_list_yields_the_playlist() -> None:
    body = ids(
        serverResponse={
            "fileListMode": "string",
            "fileList": f"{SID}_class1024.m3u8",
            "uploadingStatus": "backuped",
        }
    )

    result = StopResult.from_response(200, body)

    assert result.file_list == (f"{SID}_class1024.m3u8",)
    assert result.uploading_status == "backuped"


def test_stop_accepts_the_lowercase_filename_spelling() -> None:
    body = ids(serverResponse={"fileListMode": "json", "fileList": [{"filename": FILE}]})

    assert StopResult.from_response(200, body).file_list == (FILE,)


@pytest.mark.parametrize(("given", "expected"), [("unknow", "unknown"), ("unknown", "unknown")])
def test_stop_reads_the_legacy_unknow_as_unknown(given: str, expected: str) -> None:
    body = ids(serverResponse={"uploadingStatus": given})

    assert StopResult.from_response(200, body).uploading_status == expected


def test_stop_in_web_mode_reads_the_upload_service_and_recorder_file_list() -> None:
    body = ids(
        serverResponse={
            "extensionServiceState": [
                {"payload": {"uploadingStatus": "uploaded"}, "serviceName": "upload_service"},
                {
                    "payload": {
                        "fileList": [{"filename": f"{SID}_webrec01.m3u8", "sliceStartTime": 1}],
                        "state": "exit",
                    },
                    "serviceName": "web_recorder_service",
                },
            ]
        }
    )

    result = StopResult.from_response(200, body)

    assert result.uploading_status == "uploaded"
    assert result.file_list == (f"{SID}_webrec01.m3u8",)


def test_stop_with_nothing_recorded_is_a_result_with_code_435() -> None:
    result = StopResult.from_response(206, ids(code=435, reason="no recorded data"))

    assert result.has_no_recorded_data
    assert not result.is_request_not_completed
    assert result.uploading_status == "unknown"
    assert result.file_list == ()


def test_query_reads_status_and_files() -> None:
    body = ids(
        serverResponse={"status": 5, "fileListMode": "json", "fileList": [{"fileName": FILE}]}
    )

    result = QueryResult.from_response(body)

    assert result.status == 5
    assert result.is_started
    assert result.file_list == (FILE,)


def test_query_without_server_response_has_no_status() -> None:
    result = QueryResult.from_response(ids())

    assert result.status is None
    assert not result.is_started


# --- requests made ----------------------------------------------------------------------


def test_acquire_posts_to_the_app_path_with_basic_auth() -> None:
    harness = Harness(answer(200, {"cname": "class1024", "uid": "527841", "resourceId": RID}))

    resource_id = harness.client.acquire("class1024", "527841", {"scene": 0})

    assert resource_id == RID
    ((method, url, kwargs),) = harness.session.calls
    assert (method, url) == (
        "POST",
        "https://api.example.test/v1/apps/app-1/cloud_recording/acquire",
    )
    assert kwargs["json"] == {"cname": "class1024", "uid": "527841", "clientRequest": {"scene": 0}}
    prepared = requests.Request("POST", url, auth=kwargs["auth"]).prepare()
    expected = base64.b64encode(f"customer-1:{SECRET}".encode()).decode()
    assert prepared.headers["Authorization"] == f"Basic {expected}"


def test_stop_sends_async_stop_on_the_task_path() -> None:
    harness = Harness(answer(200, ids(serverResponse={"uploadingStatus": "uploaded"})))

    harness.client.stop(RID, SID, "mix", "class1024", "527841", async_stop=True)

    ((_, url, kwargs),) = harness.session.calls
    assert url.endswith(f"/resourceid/{RID}/sid/{SID}/mode/mix/stop")
    assert kwargs["json"]["clientRequest"] == {"async_stop": True}


def test_a_synchronous_stop_is_read_with_the_longer_timeout() -> None:
    stopped = ids(serverResponse={"uploadingStatus": "uploaded"})
    harness = Harness(answer(200, stopped), answer(200, stopped))

    harness.client.stop(RID, SID, "mix", "class1024", "527841")
    harness.client.stop(RID, SID, "mix", "class1024", "527841", async_stop=True)

    assert [kwargs["timeout"] for _, _, kwargs in harness.session.calls] == [
        (10.0, 30.0),
        (10.0, 10.0),
    ]


def test_update_layout_always_uses_mix_mode() -> None:
    harness = Harness(answer(200, ids()))

    harness.client.update_layout(RID, SID, "class1024", "527841", {"mixedVideoLayout": 1})

    assert harness.session.calls[0][1].endswith(f"/sid/{SID}/mode/mix/updateLayout")
    assert harness.records[0].endpoint == "update_layout"


def test_an_unknown_mode_is_refused_before_any_request() -> None:
    harness = Harness()

    with pytest.raises(ValueError, match="mode"):
        harness.client.query(RID, SID, "composite")  # type: ignore[arg-type]  # the point of the test

    assert harness.session.calls == []


# --- call records -----------------------------------------------------------------------


def test_call_records_carry_no_credentials() -> None:
    harness = Harness(answer(200, ids(storageConfig={"secretKey": STORAGE_SECRET})))

    harness.client.start(RID, "individual", "class1024", "527841", START_REQUEST)

    (record,) = harness.records
    assert (record.endpoint, record.method, record.http_status, record.attempt) == (
        "start",
        "POST",
        200,
        1,
    )
    assert record.path == f"/v1/apps/app-1/cloud_recording/resourceid/{RID}/mode/individual/start"
    assert (record.resource_id, record.sid) == (RID, SID)
    assert "DO-NOT-LEAK" not in repr(record)
    assert SECRET not in repr(record)
    assert record.request is not None
    assert record.request["clientRequest"]["storageConfig"]["bucket"] == "recordings"


def test_a_long_text_answer_is_truncated_in_the_record() -> None:
    harness = Harness(answer(502, text="<html>" + "x" * 5000), max_attempts=1)

    with pytest.raises(AgoraServerError):
        harness.client.query(RID, SID, "individual")

    assert len(harness.records[0].response) < 1100
    assert harness.records[0].response.endswith("[truncated]")


# --- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (401, {"message": "Invalid authentication credentials"}, AgoraAuthError),
        (404, {"code": 404, "reason": "failed to find worker"}, AgoraNotFoundError),
        (400, {"code": 2, "reason": "invalid parameter"}, InvalidParametersError),
        (400, {"code": 432, "reason": "mismatch"}, AgoraError),
        (404, {"message": "no Route matched with those values"}, AgoraError),
    ],
)
def test_client_errors_are_typed_and_never_retried(
    status: int, body: Any, error: type[AgoraError]
) -> None:
    harness = Harness(answer(status, body))

    with pytest.raises(error) as caught:
        harness.client.query(RID, SID, "individual")

    assert type(caught.value) is error
    assert caught.value.http_status == status
    assert caught.value.body == body
    assert len(harness.records) == 1
    assert harness.sleeps == []


def test_start_twice_raises_already_started() -> None:
    harness = Harness(answer(201, {"code": 7, "reason": "already started"}))

    with pytest.raises(AlreadyStartedError) as caught:
        harness.client.start(RID, "mix", "class1024", "527841", START_REQUEST)

    assert (caught.value.code, caught.value.reason, caught.value.sid) == (
        7,
        "agora_already_started",
        None,
    )


def test_start_conflict_raises_task_conflict() -> None:
    harness = Harness(answer(400, {"code": 53, "reason": "task conflict"}))

    with pytest.raises(TaskConflictError):
        harness.client.start(RID, "mix", "class1024", "527841", START_REQUEST)


def test_stop_when_already_exiting_raises_invalid_operation_once() -> None:
    harness = Harness(answer(400, {"code": 49, "reason": "invalid operation"}))

    with pytest.raises(InvalidOperationError):
        harness.client.stop(RID, SID, "mix", "class1024", "527841")

    assert len(harness.records) == 1


def test_errors_never_show_the_customer_secret() -> None:
    harness = Harness(answer(401, {"message": "Invalid authentication credentials"}))

    with pytest.raises(AgoraAuthError) as caught:
        harness.client.acquire("class1024", "527841")

    shown = f"{caught.value!s} {caught.value!r} {caught.value.body!r} {harness.client!r}"
    assert SECRET not in shown
    assert "customer-1" not in repr(harness.client)


# --- retries ----------------------------------------------------------------------------


def test_query_retries_a_gateway_timeout_after_the_first_backoff() -> None:
    harness = Harness(
        answer(504, {"code": 62, "reason": "request timeout"}),
        answer(200, ids(serverResponse={"status": 5})),
    )

    result = harness.client.query(RID, SID, "individual")

    assert result.status == 5
    assert [r.attempt for r in harness.records] == [1, 2]
    assert harness.sleeps == [1.0]


def test_server_errors_raise_after_the_last_attempt() -> None:
    harness = Harness(*[answer(500, {"code": 500, "reason": "internal_error"})] * 3)

    with pytest.raises(AgoraServerError) as caught:
        harness.client.acquire("class1024", "527841")

    assert caught.value.attempt == 3
    assert harness.sleeps == [1.0, 3.0]


def test_connection_errors_are_retried_and_recorded_without_a_status() -> None:
    harness = Harness(
        requests.ConnectionError("refused"),
        requests.ReadTimeout("slow"),
        answer(200, {"resourceId": RID}),
    )

    assert harness.client.acquire("class1024", "527841") == RID

    assert [(r.http_status, r.error) for r in harness.records] == [
        (None, "ConnectionError"),
        (None, "ReadTimeout"),
        (200, None),
    ]


def test_connection_error_does_not_chain_the_request_and_its_auth_header() -> None:
    harness = Harness(*[requests.ConnectionError("refused")] * 3)

    with pytest.raises(AgoraConnectionError) as caught:
        harness.client.acquire("class1024", "527841")

    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_acquire_does_not_retry_request_not_completed() -> None:
    harness = Harness(answer(206, {"code": 65, "reason": "request not completed"}))

    with pytest.raises(RequestNotCompletedError):
        harness.client.acquire("class1024", "527841")

    assert len(harness.records) == 1


def test_start_retries_request_not_completed() -> None:
    harness = Harness(
        answer(206, {"code": 65, "reason": "request not completed"}),
        answer(200, ids()),
    )

    assert harness.client.start(RID, "mix", "class1024", "527841", START_REQUEST) == SID
    assert len(harness.records) == 2


def test_rate_limit_waits_at_least_retry_after() -> None:
    harness = Harness(
        answer(429, {"message": "API rate limit exceeded"}, headers={"Retry-After": "2"}),
        answer(200, ids()),
    )

    harness.client.update(RID, SID, "individual", "class1024", "527841", {"streamSubscribe": {}})

    assert harness.sleeps == [2.0]


def test_rate_limit_error_after_the_last_attempt() -> None:
    harness = Harness(*[answer(429, {"message": "API rate limit exceeded"})] * 3)

    with pytest.raises(AgoraRateLimitedError):
        harness.client.update(RID, SID, "individual", "class1024", "527841", {})


def test_stop_not_completed_after_every_attempt_is_a_206_result() -> None:
    harness = Harness(*[answer(206, {"code": 65, "reason": "request not completed"})] * 3)

    result = harness.client.stop(RID, SID, "individual", "class1024", "527841")

    assert (result.http_status, result.code, result.uploading_status) == (206, 65, "unknown")
    assert result.is_request_not_completed
    assert [r.attempt for r in harness.records] == [1, 2, 3]
    assert harness.sleeps == [1.0, 3.0]


def test_stop_206_in_the_legacy_backup_reading_is_a_result() -> None:
    body = ids(serverResponse={"uploadingStatus": "backuped", "fileList": f"{SID}_c.m3u8"})
    harness = Harness(answer(206, body))

    result = harness.client.stop(RID, SID, "mix", "class1024", "527841")

    assert (result.http_status, result.code, result.uploading_status) == (206, None, "backuped")
    assert result.file_list == (f"{SID}_c.m3u8",)
    assert len(harness.records) == 1


def test_stop_with_nothing_recorded_is_answered_without_retry() -> None:
    harness = Harness(answer(206, ids(code=435, reason="no recorded data")))

    result = harness.client.stop(RID, SID, "individual", "class1024", "527841")

    assert result.has_no_recorded_data
    assert len(harness.records) == 1
    assert harness.sleeps == []
