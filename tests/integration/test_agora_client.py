"""AgoraClient against the simulator's REST API over loopback: answers, errors, retries."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from simulator.config import SimulatorConfig
from simulator.server import SimulatorServer
from simulator.service import CloudRecordingService
from webhook.agora_client import (
    AgoraAuthError,
    AgoraClient,
    AgoraNotFoundError,
    AlreadyStartedError,
    CallRecord,
    InvalidOperationError,
    TaskConflictError,
)

APP_ID = "app-under-test"
CUSTOMER_ID = "customer-id"
CUSTOMER_SECRET = "customer-secret-DO-NOT-LEAK"
STORAGE_SECRET = "storage-secret-DO-NOT-LEAK"
CNAME = "class1024"
UID = "527841"

# No endpoint: the simulator keeps the files to itself, these tests are about the REST API.
CLIENT_REQUEST: dict[str, Any] = {
    "token": "rtc-token-DO-NOT-LEAK",
    "recordingConfig": {"channelType": 1, "streamTypes": 2, "maxIdleTime": 30},
    "storageConfig": {
        "vendor": 1,
        "region": 0,
        "bucket": "recordings",
        "accessKey": "storage-access-DO-NOT-LEAK",
        "secretKey": STORAGE_SECRET,
        "fileNamePrefix": ["rec"],
    },
}


class Acknowledge(BaseHTTPRequestHandler):
    """Accepts every callback: these tests do not look at them."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def callback_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Acknowledge)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,))
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/agora/callback"
    server.shutdown()
    thread.join()
    server.server_close()


@pytest.fixture
def simulator(callback_url: str) -> Iterator[SimulatorServer]:
    config = SimulatorConfig(
        app_id=APP_ID,
        customer_id=CUSTOMER_ID,
        customer_secret=CUSTOMER_SECRET,
        callback_url=callback_url,
        callback_secret="ncs-secret",
        time_scale=0.002,
    )
    server = SimulatorServer(CloudRecordingService(config)).start()
    yield server
    server.stop()


@pytest.fixture
def records() -> list[CallRecord]:
    return []


@pytest.fixture
def client(simulator: SimulatorServer, records: list[CallRecord]) -> Iterator[AgoraClient]:
    with AgoraClient(
        simulator.url,
        APP_ID,
        CUSTOMER_ID,
        CUSTOMER_SECRET,
        timeout_s=5.0,
        backoff_s=(0.0,),
        on_call=records.append,
    ) as agora:
        yield agora


def set_faults(simulator: SimulatorServer, *faults: str) -> None:
    response = requests.put(
        f"{simulator.url}/_simulator/faults/{CNAME}", json={"faults": list(faults)}, timeout=5
    )
    response.raise_for_status()
    response.close()


def start_recording(client: AgoraClient, mode: Any = "individual") -> tuple[str, str]:
    resource_id = client.acquire(CNAME, UID)
    return resource_id, client.start(resource_id, mode, CNAME, UID, CLIENT_REQUEST)


def wait_until_started(client: AgoraClient, resource_id: str, sid: str) -> None:
    deadline = time.monotonic() + 5
    while client.query(resource_id, sid, "individual").status != 5:
        assert time.monotonic() < deadline, "the recording never reached status 5"
        time.sleep(0.01)


def test_a_recording_is_acquired_started_queried_and_stopped(client: AgoraClient) -> None:
    resource_id, sid = start_recording(client)
    wait_until_started(client, resource_id, sid)

    query = client.query(resource_id, sid, "individual")
    stop = client.stop(resource_id, sid, "individual", CNAME, UID)

    assert len(sid) == 32
    assert int(sid, 16) >= 0
    assert query.is_started
    assert len(query.file_list) == 4  # 2 publishers x audio, video
    assert all(name.startswith(f"{sid}_{CNAME}__uid_s_") for name in query.file_list)
    assert (stop.http_status, stop.code, stop.uploading_status) == (200, None, "uploaded")
    assert stop.file_list == query.file_list
    assert stop.raw["serverResponse"]["fileListMode"] == "json"


def test_composite_hls_stop_answers_a_string_file_list(client: AgoraClient) -> None:
    resource_id, sid = start_recording(client, "mix")

    stop = client.stop(resource_id, sid, "mix", CNAME, UID)

    assert stop.raw["serverResponse"]["fileListMode"] == "string"
    assert stop.file_list == (f"{sid}_{CNAME}.m3u8",)


def test_update_and_update_layout_answer_while_recording(client: AgoraClient) -> None:
    resource_id, sid = start_recording(client, "mix")

    client.update(resource_id, sid, "mix", CNAME, UID, {"streamSubscribe": {}})
    client.update_layout(resource_id, sid, CNAME, UID, {"mixedVideoLayout": 1})

    client.stop(resource_id, sid, "mix", CNAME, UID)


def test_starting_a_resource_twice_raises_already_started(client: AgoraClient) -> None:
    resource_id, _ = start_recording(client)

    with pytest.raises(AlreadyStartedError) as caught:
        client.start(resource_id, "individual", CNAME, UID, CLIENT_REQUEST)

    assert (caught.value.http_status, caught.value.code) == (201, 7)


def test_a_second_task_for_the_same_cname_and_uid_conflicts(client: AgoraClient) -> None:
    start_recording(client)

    with pytest.raises(TaskConflictError) as caught:
        start_recording(client)

    assert (caught.value.http_status, caught.value.code) == (400, 53)


def test_stopping_twice_raises_invalid_operation(client: AgoraClient) -> None:
    resource_id, sid = start_recording(client)
    client.stop(resource_id, sid, "individual", CNAME, UID)

    with pytest.raises(InvalidOperationError) as caught:
        client.stop(resource_id, sid, "individual", CNAME, UID)

    assert (caught.value.http_status, caught.value.code) == (400, 49)


def test_stop_once_the_task_is_forgotten_raises_not_found(
    client: AgoraClient, simulator: SimulatorServer
) -> None:
    resource_id, sid = start_recording(client)
    client.stop(resource_id, sid, "individual", CNAME, UID)
    config = simulator.service.config
    assert simulator.service.wait_until_idle(5.0)
    time.sleep(config.scaled(config.forget_after_s) + 0.02)

    with pytest.raises(AgoraNotFoundError):
        client.stop(resource_id, sid, "individual", CNAME, UID)


def test_query_after_stop_raises_not_found(client: AgoraClient) -> None:
    resource_id, sid = start_recording(client)
    client.stop(resource_id, sid, "individual", CNAME, UID)

    with pytest.raises(AgoraNotFoundError) as caught:
        client.query(resource_id, sid, "individual")

    assert caught.value.detail == "failed to find worker"


def test_stop_206_is_retried_then_returned_as_not_completed(
    client: AgoraClient, simulator: SimulatorServer, records: list[CallRecord]
) -> None:
    resource_id, sid = start_recording(client)
    set_faults(simulator, "stop_206")

    result = client.stop(resource_id, sid, "individual", CNAME, UID)

    assert (result.http_status, result.code, result.uploading_status) == (206, 65, "unknown")
    stops = [r for r in records if r.endpoint == "stop"]
    assert [(r.attempt, r.http_status) for r in stops] == [(1, 206), (2, 206), (3, 206)]


def test_nothing_recorded_is_answered_once_with_435(
    client: AgoraClient, simulator: SimulatorServer, records: list[CallRecord]
) -> None:
    set_faults(simulator, "nothing_recorded")
    resource_id, sid = start_recording(client)

    result = client.stop(resource_id, sid, "individual", CNAME, UID)

    assert (result.http_status, result.code) == (206, 435)
    assert result.has_no_recorded_data
    assert [r.attempt for r in records if r.endpoint == "stop"] == [1]


def test_wrong_credentials_raise_auth_error(simulator: SimulatorServer) -> None:
    with (
        AgoraClient(simulator.url, APP_ID, CUSTOMER_ID, "not-the-secret") as agora,
        pytest.raises(AgoraAuthError) as caught,
    ):
        agora.acquire(CNAME, UID)

    assert caught.value.http_status == 401
    assert caught.value.detail == "Invalid authentication credentials"
    assert "not-the-secret" not in f"{caught.value!s} {caught.value!r} {caught.value.body!r}"


def test_call_records_hold_no_secrets(client: AgoraClient, records: list[CallRecord]) -> None:
    resource_id, sid = start_recording(client)
    client.query(resource_id, sid, "individual")
    client.stop(resource_id, sid, "individual", CNAME, UID)

    shown = repr(records)
    assert [r.endpoint for r in records] == ["acquire", "start", "query", "stop"]
    assert STORAGE_SECRET not in shown
    assert CUSTOMER_SECRET not in shown
    assert "DO-NOT-LEAK" not in shown
    assert all(r.duration_ms >= 0 and r.http_status == 200 for r in records)
    assert records[1].sid == sid
    assert records[1].request is not None
    assert records[1].request["clientRequest"]["storageConfig"] == {
        "vendor": 1,
        "region": 0,
        "bucket": "recordings",
        "fileNamePrefix": ["rec"],
    }
