"""The simulator end to end: signed callbacks in Agora's order, files in a real moto S3 server,
NCS delivery rules and every fault, seen from a callback receiver on loopback."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer

from simulator.config import SimulatorConfig
from simulator.server import SimulatorServer
from simulator.service import CloudRecordingService
from tests.conftest import example_files
from webhook.agora_client import (
    AgoraClient,
    AgoraNotFoundError,
    InvalidOperationError,
    Mode,
)
from webhook.errors import SignatureError, SignatureMissingError
from webhook.redis_server import free_port
from webhook.signature import HEADER_V1, HEADER_V2, verify

ROOT = Path(__file__).resolve().parents[2]
APP_ID, CUSTOMER_ID, CUSTOMER_SECRET = "app-sim", "customer", "customer-secret"
NCS_SECRET = "ncs-secret"
CNAME, UID = "class1024", "527841"
TIME_SCALE = 0.002  # an Agora minute lasts 0.12 s
NOTICE_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class Delivery:
    body: dict[str, Any]
    headers: dict[str, str]


class Receiver:
    """Collects callbacks after checking both signatures; answers `status` (200 {} by default)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.deliveries: list[Delivery] = []
        self.signature_failures: list[str] = []
        self.status = 200
        self.on_delivery: Callable[[dict[str, Any]], None] | None = None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.receive(raw, dict(self.headers))
                self.send_response(receiver.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/agora/callback"

    def receive(self, raw: bytes, headers: dict[str, str]) -> None:
        try:
            # Each header on its own: V2 alone, then V1 alone, must both match the raw bytes.
            v2, v1 = headers.get(HEADER_V2), headers.get(HEADER_V1)
            verify(raw, signature_v2=v2, signature_v1=None, secrets=[NCS_SECRET])
            verify(raw, signature_v2=None, signature_v1=v1, secrets=[NCS_SECRET])
        except (SignatureError, SignatureMissingError) as err:
            with self.lock:
                self.signature_failures.append(str(err))
            return
        body = json.loads(raw)
        if self.on_delivery is not None:
            self.on_delivery(body)
        with self.lock:
            self.deliveries.append(Delivery(body, headers))

    def bodies(self, sid: str) -> list[dict[str, Any]]:
        with self.lock:
            return [d.body for d in self.deliveries if d.body["payload"]["sid"] == sid]

    def event_types(self, sid: str) -> list[int]:
        """Event types of the distinct notifications for sid, in sequence order."""
        by_sequence = {b["payload"]["sequence"]: b["eventType"] for b in self.bodies(sid)}
        return [by_sequence[sequence] for sequence in sorted(by_sequence)]

    def wait_for(self, condition: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.005)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, args=(0.01,))
    thread.start()
    yield receiver
    receiver.server.shutdown()
    thread.join()
    receiver.server.server_close()
    assert receiver.signature_failures == []


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint: str) -> Iterator[Any]:
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="k",
        aws_secret_access_key="s",
        region_name="us-east-1",
    )
    yield client
    client.close()


@pytest.fixture
def bucket(s3: Any, request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-")
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def simulator(receiver: Receiver) -> Iterator[SimulatorServer]:
    config = SimulatorConfig(
        app_id=APP_ID,
        customer_id=CUSTOMER_ID,
        customer_secret=CUSTOMER_SECRET,
        callback_url=receiver.url,
        callback_secret=NCS_SECRET,
        time_scale=TIME_SCALE,
        seed=7,
    )
    server = SimulatorServer(CloudRecordingService(config)).start()
    yield server
    server.stop()


@pytest.fixture
def client(simulator: SimulatorServer) -> Iterator[AgoraClient]:
    with AgoraClient(
        simulator.url, APP_ID, CUSTOMER_ID, CUSTOMER_SECRET, backoff_s=(0.0,)
    ) as agora:
        yield agora


@dataclass(frozen=True)
class Session:
    client: AgoraClient
    resource_id: str
    sid: str
    mode: Mode

    def query_status(self) -> int | None:
        return self.client.query(self.resource_id, self.sid, self.mode).status

    def stop(self) -> Any:
        return self.client.stop(self.resource_id, self.sid, self.mode, CNAME, UID)


def start(
    client: AgoraClient,
    *,
    mode: Mode = "individual",
    s3_endpoint: str | None = None,
    bucket: str = "unused",
    av_file_type: tuple[str, ...] = ("hls",),
) -> Session:
    storage: dict[str, Any] = {
        "vendor": 11,
        "region": 0,
        "bucket": bucket,
        "accessKey": "k",
        "secretKey": "s",
        "fileNamePrefix": ["rec", CNAME],
    }
    if s3_endpoint is not None:
        storage["extensionParams"] = {"endpoint": s3_endpoint}
    resource_id = client.acquire(CNAME, UID)
    client_request = {
        "storageConfig": storage,
        "recordingFileConfig": {"avFileType": list(av_file_type)},
    }
    sid = client.start(resource_id, mode, CNAME, UID, client_request)
    return Session(client, resource_id, sid, mode)


def set_faults(simulator: SimulatorServer, *faults: str, **options: Any) -> None:
    body = {"faults": list(faults), "options": options}
    with requests.put(f"{simulator.url}/_simulator/faults/{CNAME}", json=body, timeout=5) as r:
        assert r.status_code == 200, r.text


def wait_until_idle(simulator: SimulatorServer) -> None:
    assert simulator.service.wait_until_idle(5.0), "the simulator did not settle"


def keys(s3: Any, bucket: str) -> list[str]:
    listing = s3.list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def examples_by_event_type() -> dict[int, dict[str, Any]]:
    examples: dict[int, dict[str, Any]] = {}
    for path in example_files():
        body = json.loads(path.read_text())
        examples.setdefault(body["eventType"], body)
    return examples


def test_a_clean_session_sends_signed_callbacks_in_documented_order(
    client: AgoraClient, simulator: SimulatorServer, receiver: Receiver
) -> None:
    session = start(client)
    receiver.wait_for(lambda: 33 in receiver.event_types(session.sid), "a minute's progress")

    session.stop()
    wait_until_idle(simulator)

    types = receiver.event_types(session.sid)
    minutes = types.count(33) - 1
    assert types == [40, 30, 44, 43, 44, 43, 42, 42, 42, 42, 4] + [33] * minutes + [
        41,
        33,
        31,
        11,
    ]
    bodies = receiver.bodies(session.sid)
    assert [b["payload"]["sequence"] for b in bodies] == list(range(len(types)))
    assert len({b["noticeId"] for b in bodies}) == len(bodies)
    assert all(NOTICE_ID.match(b["noticeId"]) for b in bodies)
    assert all(b["sid"] == session.sid and b["productId"] == 3 for b in bodies)
    assert bodies[-3]["payload"]["details"]["progress"] == 10000


def test_callbacks_have_the_shape_of_the_documented_examples(
    client: AgoraClient, simulator: SimulatorServer, receiver: Receiver
) -> None:
    session = start(client)
    session.stop()
    wait_until_idle(simulator)

    examples = examples_by_event_type()
    for body in receiver.bodies(session.sid):
        example = examples[body["eventType"]]
        assert body.keys() == example.keys()
        assert body["payload"].keys() == example["payload"].keys()
        assert body["payload"]["details"].keys() == example["payload"]["details"].keys()
        assert isinstance(body["payload"]["uid"], str)
        if isinstance(body["payload"]["details"].get("fileList"), list):
            entry, expected = body["payload"]["details"]["fileList"][0], example["payload"]
            assert entry.keys() == expected["details"]["fileList"][0].keys()


def test_uploaded_files_are_in_the_bucket_before_the_31_callback(
    client: AgoraClient,
    simulator: SimulatorServer,
    receiver: Receiver,
    s3_endpoint: str,
    s3: Any,
    bucket: str,
) -> None:
    seen_at_31: list[str] = []

    def list_bucket_at_31(body: dict[str, Any]) -> None:
        if body["eventType"] == 31:
            seen_at_31.extend(keys(s3, bucket))

    receiver.on_delivery = list_bucket_at_31
    session = start(client, s3_endpoint=s3_endpoint, bucket=bucket)

    stop = session.stop()
    wait_until_idle(simulator)

    playlists = [f"rec/{CNAME}/{name}" for name in stop.file_list]
    assert len(playlists) == 4
    assert set(playlists) <= set(seen_at_31)
    segments = [k for k in seen_at_31 if k.endswith(".ts")]
    stem = rf"rec/{CNAME}/{session.sid}_{CNAME}__uid_s_\d+__uid_e_(audio|video)_\d{{17}}\.ts"
    assert segments
    assert all(re.fullmatch(stem, k) for k in segments)
    playlist = s3.get_object(Bucket=bucket, Key=playlists[0])["Body"].read().decode()
    assert playlist.startswith("#EXTM3U\n")
    assert re.search(r"#EXTINF:\d+\.\d{3},", playlist)
    assert playlist.rstrip().endswith("#EXT-X-ENDLIST")


def test_composite_mp4_session_writes_playlist_segments_and_mp4(
    client: AgoraClient, simulator: SimulatorServer, s3_endpoint: str, s3: Any, bucket: str
) -> None:
    session = start(
        client, mode="mix", s3_endpoint=s3_endpoint, bucket=bucket, av_file_type=("hls", "mp4")
    )

    stop = session.stop()
    wait_until_idle(simulator)

    stem = f"rec/{CNAME}/{session.sid}_{CNAME}"
    assert stop.raw["serverResponse"]["fileListMode"] == "json"
    assert set(stop.file_list) == {f"{session.sid}_{CNAME}.m3u8", f"{session.sid}_{CNAME}_0.mp4"}
    stored = keys(s3, bucket)
    assert {f"{stem}.m3u8", f"{stem}_0.mp4"} <= set(stored)
    assert any(re.fullmatch(rf"{stem}_\d{{17}}\.ts", k) for k in stored)


def test_backuped_files_appear_later_under_the_renamed_playlist(
    client: AgoraClient,
    simulator: SimulatorServer,
    receiver: Receiver,
    s3_endpoint: str,
    s3: Any,
    bucket: str,
) -> None:
    set_faults(simulator, "backuped", restore_delay_s=30)
    seen_at_32: list[list[str]] = []

    def list_bucket_at_32(body: dict[str, Any]) -> None:
        if body["eventType"] == 32:
            seen_at_32.append(keys(s3, bucket))

    receiver.on_delivery = list_bucket_at_32
    session = start(client, s3_endpoint=s3_endpoint, bucket=bucket)

    stop = session.stop()
    wait_until_idle(simulator)

    assert stop.uploading_status == "backuped"
    assert receiver.event_types(session.sid)[-3:] == [33, 32, 11]
    assert seen_at_32 == [[]]
    stored = keys(s3, bucket)
    for name in stop.file_list:
        stem = name.removesuffix(".m3u8")
        assert f"rec/{CNAME}/{name}" not in stored
        assert any(re.fullmatch(rf"rec/{CNAME}/{stem}_\d{{13}}_0\.m3u8", k) for k in stored)
    assert any(k.endswith(".ts") for k in stored)


def test_backuped_never_restored_leaves_the_bucket_empty(
    client: AgoraClient, simulator: SimulatorServer, s3_endpoint: str, s3: Any, bucket: str
) -> None:
    set_faults(simulator, "backuped_never_restored")
    session = start(client, s3_endpoint=s3_endpoint, bucket=bucket)

    assert session.stop().uploading_status == "backuped"
    wait_until_idle(simulator)

    assert keys(s3, bucket) == []


def test_a_dropped_event_type_is_never_delivered(
    client: AgoraClient, simulator: SimulatorServer, receiver: Receiver
) -> None:
    set_faults(simulator, "drop:31")
    session = start(client)

    session.stop()
    wait_until_idle(simulator)

    types = receiver.event_types(session.sid)
    assert 31 not in types
    assert types[-2:] == [33, 11]
    sequences = sorted(b["payload"]["sequence"] for b in receiver.bodies(session.sid))
    assert sequences[-1] - sequences[-2] == 2  # the gap a receiver can spot
    assert simulator.service.stats()["sessions"][session.sid]["suppressed"] == 1


def test_duplicate_sends_each_notice_twice_plus_a_redundant_copy(
    client: AgoraClient, simulator: SimulatorServer, receiver: Receiver
) -> None:
    set_faults(simulator, "duplicate")
    session = start(client)

    session.stop()
    wait_until_idle(simulator)

    by_sequence: dict[int, list[str]] = {}
    for body in receiver.bodies(session.sid):
        by_sequence.setdefault(body["payload"]["sequence"], []).append(body["noticeId"])
    assert by_sequence
    for notice_ids in by_sequence.values():
        assert sorted(Counter(notice_ids).values()) == [1, 2]


def test_reorder_shuffles_delivery_but_loses_nothing(
    client: AgoraClient, simulator: SimulatorServer, receiver: Receiver
) -> None:
    set_faults(simulator, "reorder", reorder_window=4)
    session = start(client)

    session.stop()
    wait_until_idle(simulator)

    delivered = [b["payload"]["sequence"] for b in receiver.bodies(session.sid)]
    assert sorted(delivered) == list(range(len(delivered)))
    assert delivered != sorted(delivered)


def test_a_failing_receiver_gets_one_attempt_and_three_retries_per_notice(
    client: AgoraClient, simulator: SimulatorServer, receiver: Receiver
) -> None:
    receiver.status = 500
    session = start(client)

    session.stop()
    wait_until_idle(simulator)

    bodies = receiver.bodies(session.sid)
    attempts = Counter(b["noticeId"] for b in bodies)
    assert set(attempts.values()) == {4}
    first = [b for b in bodies if b["noticeId"] == bodies[0]["noticeId"]]
    notify_ms = [b["notifyMs"] for b in first]
    assert notify_ms == sorted(notify_ms)
    assert notify_ms[-1] > notify_ms[0]  # refreshed on each resend
    with requests.get(f"{simulator.url}/_simulator/stats", timeout=5) as response:
        stats = response.json()["sessions"][session.sid]
    assert stats["dropped"] == stats["notices"] == len(attempts)
    assert stats["sent"] == 4 * len(attempts)
    assert stats["delivered"] == 0


def test_idle_exit_ends_the_session_without_a_stop(
    client: AgoraClient, simulator: SimulatorServer, receiver: Receiver
) -> None:
    set_faults(simulator, "idle_exit", max_idle_s=30)
    session = start(client)

    receiver.wait_for(lambda: 11 in receiver.event_types(session.sid), "session_exit")

    leave = next(b for b in receiver.bodies(session.sid) if b["eventType"] == 41)
    assert leave["payload"]["details"]["leaveCode"] == 4
    assert receiver.event_types(session.sid)[-3:] == [33, 31, 11]
    with pytest.raises(InvalidOperationError):
        session.stop()
    with pytest.raises(AgoraNotFoundError):
        session.query_status()


def test_recorder_error_reports_event_1_and_exits(
    client: AgoraClient, simulator: SimulatorServer, receiver: Receiver
) -> None:
    set_faults(simulator, "recorder_error")
    session = start(client)

    receiver.wait_for(lambda: 11 in receiver.event_types(session.sid), "session_exit")

    assert receiver.event_types(session.sid) == [40, 30, 1, 41, 11]
    bodies = {b["eventType"]: b["payload"]["details"] for b in receiver.bodies(session.sid)}
    assert (bodies[1]["module"], bodies[1]["errorCode"]) == (0, 52)
    assert bodies[11]["exitStatus"] == 1
    with pytest.raises(AgoraNotFoundError):
        session.query_status()


def test_no_recorder_start_never_sends_40_or_30(
    client: AgoraClient, simulator: SimulatorServer, receiver: Receiver
) -> None:
    set_faults(simulator, "no_recorder_start")
    session = start(client)
    time.sleep(40 * TIME_SCALE)  # past the usual start-up

    status = session.query_status()
    stop = session.stop()
    wait_until_idle(simulator)

    assert status == 2  # recorder starting, forever
    assert (stop.http_status, stop.code) == (206, 435)
    assert receiver.event_types(session.sid) == [11]


def test_stop_206_sends_no_upload_callback(
    client: AgoraClient, simulator: SimulatorServer, receiver: Receiver
) -> None:
    set_faults(simulator, "stop_206")
    session = start(client)

    assert session.stop().is_request_not_completed
    wait_until_idle(simulator)

    types = receiver.event_types(session.sid)
    assert types[-3:] == [41, 33, 11]
    assert not {31, 32} & set(types)


def test_nothing_recorded_sends_no_slices_or_files(
    client: AgoraClient, simulator: SimulatorServer, receiver: Receiver
) -> None:
    set_faults(simulator, "nothing_recorded")
    session = start(client)

    assert session.stop().has_no_recorded_data
    wait_until_idle(simulator)

    assert receiver.event_types(session.sid) == [40, 30, 41, 11]


def test_an_unknown_fault_is_refused(simulator: SimulatorServer) -> None:
    body = {"faults": ["explode"]}
    with requests.put(f"{simulator.url}/_simulator/faults/{CNAME}", json=body, timeout=5) as r:
        assert r.status_code == 400
        assert "explode" in r.json()["error"]


def test_missing_credentials_get_agoras_401(simulator: SimulatorServer) -> None:
    url = f"{simulator.url}/v1/apps/{APP_ID}/cloud_recording/acquire"
    with requests.post(url, json={"cname": CNAME, "uid": UID}, timeout=5) as response:
        assert response.status_code == 401
        assert response.json() == {"message": "Unauthorized"}


def test_python_m_simulator_serves_until_sigterm(receiver: Receiver) -> None:
    port = free_port()
    command = [sys.executable, "-m", "simulator", "--port", str(port)]
    command += ["--callback-url", receiver.url, "--callback-secret", NCS_SECRET]
    command += ["--app-id", APP_ID, "--customer-id", CUSTOMER_ID]
    command += ["--customer-secret", CUSTOMER_SECRET, "--time-scale", "0.01"]
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        with AgoraClient(  # retries connection refusals until it listens
            url, APP_ID, CUSTOMER_ID, CUSTOMER_SECRET, backoff_s=(0.1,), max_attempts=50
        ) as agora:
            assert agora.acquire(CNAME, UID)
        process.terminate()
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.wait()
