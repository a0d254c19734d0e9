"""End to end, every part real: the Agora simulator (REST + signed callbacks + files in S3),
gunicorn, one RQ worker with the scheduler, redis-server, moto's S3 server, and an alert
webhook receiver. Deadlines are shortened by configuration; each fault must alert within
its deadline + 30 s, clean sessions never alert, and killing or restarting the worker
loses no reconciliation and no scheduled check.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from moto.server import ThreadedMotoServer
from redis import Redis
from standardwebhooks import Webhook

from tests.integration.s3_server import S3Server
from webhook.agora_client import AgoraClient
from webhook.alerts import Alert
from webhook.redis_server import RedisServer, free_port
from webhook.store import keys
from webhook.store.alerts import AlertStore
from webhook.store.recordings import RecordingStore
from workers.session_lock import LOCK_TTL_S

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
SECRET = "ncs-secret-for-e2e"
TOKEN = "app-server-token"
CUSTOMER = ("customer-id", "customer-secret")
ALERT_SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
DEADLINE_S = 4
GRACE_S = 30  # the promise: an alert within its deadline + 30 s
TIME_SCALE = 0.01  # an Agora minute lasts 0.6 s
STUCK_BUCKET = "stuck-bucket"


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def listening(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError as err:
        return getattr(err, "code", None) is not None  # an HTTP error still means it is up


class AlertReceiver(BaseHTTPRequestHandler):
    """Collects Standard Webhooks deliveries and verifies each one."""

    received: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        payload = Webhook(ALERT_SECRET).verify(body, dict(self.headers.items()))
        self.server.received.append(payload)  # type: ignore[attr-defined]
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@dataclass
class Stack:
    web: str
    simulator: str
    redis: Redis
    bucket: str
    s3_endpoint: str
    worker_env: dict[str, str]
    log: Any  # the open log file every process writes to
    received: list[dict[str, Any]]
    stuck_reads: list[socket.socket]  # connections the never-answering storage accepted
    worker: subprocess.Popen[bytes] | None = None
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_worker(self) -> None:
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "workers"], cwd=ROOT, env=self.worker_env,
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def client(self) -> AgoraClient:
        return AgoraClient(self.simulator, "e2e-app", *CUSTOMER, backoff_s=(0.05, 0.1, 0.2))

    def alerts(self, sid: str) -> dict[str, Alert]:
        return {a.kind: a for a in AlertStore(self.redis).for_session(sid)}

    def state(self, sid: str) -> str:
        return RecordingStore(self.redis).facts(sid).state

    def forward(self, path: str, body: dict[str, Any]) -> int:
        request = urllib.request.Request(
            f"{self.web}{path}", data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)

    def record(self, cname: str, faults: list[str], options: dict[str, Any] | None = None,
               *, stop_after_s: float | None = 1.5, forward_stop: bool = True,
               max_idle_s: int = 30, bucket: str | None = None) -> str:  # fmt: skip
        """What an app server does: set up, acquire, start, forward; stop, forward."""
        control = urllib.request.Request(
            f"{self.simulator}/_simulator/faults/{cname}", method="PUT",
            data=json.dumps({"faults": faults, "options": options or {}}).encode(),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        urllib.request.urlopen(control, timeout=5).close()
        client_request = {
            "token": "rtc-token",
            "recordingConfig": {"channelType": 1, "streamTypes": 2, "maxIdleTime": max_idle_s},
            "storageConfig": {
                "vendor": 11, "region": 0, "bucket": bucket or self.bucket,
                "accessKey": "test-access-key", "secretKey": "test-secret-key",
                "fileNamePrefix": ["recordings", cname],
                "extensionParams": {"endpoint": self.s3_endpoint},
            },
        }  # fmt: skip
        with self.client() as agora:
            resource_id = agora.acquire(cname, "527841")
            sid = agora.start(resource_id, "individual", cname, "527841", client_request)
            self.forward("/api/v1/recordings", {
                "resourceId": resource_id, "sid": sid, "cname": cname, "uid": "527841",
                "mode": "individual", "clientRequest": client_request,
            })  # fmt: skip
            if stop_after_s is not None:
                time.sleep(stop_after_s)
                stop = agora.stop(resource_id, sid, "individual", cname, "527841")
                answer = {"httpStatus": stop.http_status, "response": stop.raw}
                if forward_stop:
                    self.forward(f"/api/v1/recordings/{sid}/stop", answer)
        return sid


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("e2e")
    redis_server = RedisServer(data_dir=work / "redis").start()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    s3 = S3Server(endpoint_url=f"http://{host}:{port}")
    bucket = s3.create_bucket()
    # A storage endpoint that accepts connections and never answers: a check against it
    # holds its job for three reads of STORAGE_READ_TIMEOUT_SECONDS (~9 s here), long
    # enough to kill the worker in the middle of it.
    blackhole = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.extend(iter(lambda: blackhole.accept()[0], None)),
                     daemon=True).start()  # fmt: skip
    storage = work / "storage.json"
    credentials = {"access_key_id": s3.access_key_id, "secret_access_key": s3.secret_access_key}
    storage.write_text(json.dumps({"buckets": {
        bucket: credentials | {"endpoint_url": s3.endpoint_url},
        STUCK_BUCKET: credentials | {"endpoint_url": f"http://127.0.0.1:{blackhole.getsockname()[1]}"},
    }}))  # fmt: skip
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), AlertReceiver)
    receiver.received = []  # type: ignore[attr-defined]
    threading.Thread(target=receiver.serve_forever, daemon=True).start()

    web_port, sim_port = free_port(), free_port()
    env = os.environ | {
        "REDIS_URL": redis_server.url, "AGORA_CALLBACK_SECRETS": SECRET, "APP_ENV": "production",
        "API_TOKENS": TOKEN, "GUNICORN_BIND": f"127.0.0.1:{web_port}",
        "BACKUP_DEADLINE_SECONDS": str(DEADLINE_S),
        "UPLOAD_STATUS_DEADLINE_SECONDS": str(DEADLINE_S),
        "RECORDER_START_DEADLINE_SECONDS": str(DEADLINE_S), "BACKUP_RECHECK_SECONDS": "2",
        "SWEEP_INTERVAL_SECONDS": "1", "STORAGE_CONFIG": str(storage),
        "STORAGE_READ_TIMEOUT_SECONDS": "3",
        "ALERT_WEBHOOK_URL": f"http://127.0.0.1:{receiver.server_port}/alerts",
        "ALERT_WEBHOOK_SECRET": ALERT_SECRET,
        # Workers poll the simulator's query, as they would Agora's.
        "AGORA_API_BASE": f"http://127.0.0.1:{sim_port}", "AGORA_APP_ID": "e2e-app",
        "AGORA_CUSTOMER_ID": CUSTOMER[0], "AGORA_CUSTOMER_SECRET": CUSTOMER[1],
        "QUERY_INTERVAL_SECONDS": "1", "STALE_MARGIN_SECONDS": "1",
        "MIGRATION_GRACE_SECONDS": "2",
    }  # fmt: skip
    log = (work / "processes.log").open("ab")
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        ),
        subprocess.Popen(
            [sys.executable, "-m", "simulator", "--port", str(sim_port),
             "--callback-url", f"http://127.0.0.1:{web_port}/agora/callback",
             "--callback-secret", SECRET, "--app-id", "e2e-app",
             "--customer-id", CUSTOMER[0], "--customer-secret", CUSTOMER[1],
             "--time-scale", str(TIME_SCALE), "--s3-endpoint", s3.endpoint_url,
             "--s3-access-key", s3.access_key_id, "--s3-secret-key", s3.secret_access_key],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        ),
    ]  # fmt: skip
    built = Stack(
        web=f"http://127.0.0.1:{web_port}", simulator=f"http://127.0.0.1:{sim_port}",
        redis=Redis.from_url(redis_server.url), bucket=bucket, s3_endpoint=s3.endpoint_url,
        worker_env=env, log=log, received=receiver.received,  # type: ignore[attr-defined]
        stuck_reads=held, processes=processes,
    )  # fmt: skip
    built.start_worker()
    try:
        wait_for(lambda: listening(f"{built.web}/readyz"), 30, "gunicorn")
        wait_for(lambda: listening(f"{built.simulator}/_simulator/stats"), 30, "the simulator")
        yield built
    finally:
        for process in [*processes, built.worker]:
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    # A worker's warm shutdown lets its current job finish, and a stuck
                    # storage check may have most of its ~9 s to go. The tests are over.
                    process.kill()
                    process.wait()
        receiver.shutdown()
        receiver.server_close()
        blackhole.close()
        for connection in held:
            connection.close()
        moto.stop()
        redis_server.stop()
        log.close()


ALERT_WITHIN_S = DEADLINE_S + GRACE_S


def has_alert(stack: Stack, sid: str, kind: str) -> bool:
    return kind in stack.alerts(sid)


def is_in_state(stack: Stack, sid: str, state: str) -> bool:
    return stack.state(sid) == state


def test_every_fault_alerts_within_its_deadline_and_clean_sessions_never_do(stack: Stack):
    # Started one after another; their callbacks, uploads and checks then overlap.
    sids = {
        "clean": stack.record("clean-room", []),
        "clean_chaotic": stack.record("chaotic-room", ["duplicate", "reorder"]),
        "backuped_restored": stack.record("restored-room", ["backuped"], {"restore_delay_s": 60}),
        "backuped_lost": stack.record("lost-room", ["backuped_never_restored"]),
        "stop_206": stack.record("silent-room", ["stop_206"]),
        "nothing": stack.record("empty-room", ["nothing_recorded"]),
        "error": stack.record("broken-room", ["recorder_error"], stop_after_s=None),
        "idle": stack.record("idle-room", ["idle_exit"], {"max_idle_s": 60}, stop_after_s=None),
        "no_start": stack.record("dead-room", ["no_recorder_start"], stop_after_s=None),
        # Agora ends the task, every notification about the end is lost, and the app server
        # never forwards its stop: only polling query can tell.
        "lost_end": stack.record(
            "lost-end-room", ["drop:41", "drop:31", "drop:11", "drop:33"], forward_stop=False
        ),
        "failover": stack.record("moved-room", ["failover"]),
        "slice_backup": stack.record("flaky-room", ["slice_to_backup"]),
        "upload_failed": stack.record("failed-room", ["upload_failed"]),
        "download": stack.record("transcode-room", ["download_failed"]),
        "mismatch": stack.record("mismatch-room", ["stop_extra_file"]),
        # Recording, then silence: nothing after the recorder's start arrives.
        "silent": stack.record(
            "quiet-room",
            ["drop:33", "drop:42", "drop:43", "drop:44", "drop:4"],
            stop_after_s=None,
            max_idle_s=5,
        ),
    }
    started = time.monotonic()
    expected_alerts = {
        "backuped_lost": "backup_not_uploaded",
        "stop_206": "upload_status_unknown",
        "nothing": "nothing_recorded",
        "error": "recording_error",
        "no_start": "recorder_not_started",
        "lost_end": "upload_unconfirmed",
        "failover": "failover",
        "slice_backup": "upload_warning",
        "upload_failed": "upload_failed",
        "download": "download_failed",
        "mismatch": "file_list_mismatch",
        "silent": "stale_session",
    }
    for name, kind in expected_alerts.items():
        left = max(1.0, ALERT_WITHIN_S - (time.monotonic() - started))
        wait_for(partial(has_alert, stack, sids[name], kind), left, f"{kind} for {name}")

    lost = stack.alerts(sids["backuped_lost"])["backup_not_uploaded"]
    assert lost.severity == "critical"
    assert lost.evidence["missing"]
    wait_for(lambda: stack.state(sids["backuped_restored"]) == "verified", ALERT_WITHIN_S,
             "the restored backup to verify")  # fmt: skip
    wait_for(lambda: stack.state(sids["idle"]) == "exited_idle", ALERT_WITHIN_S, "the idle exit")
    for name in ("clean", "clean_chaotic"):
        wait_for(partial(is_in_state, stack, sids[name], "uploaded"), ALERT_WITHIN_S, name)
    time.sleep(DEADLINE_S + 2)  # past every deadline: still nothing for the clean ones
    for name in ("clean", "clean_chaotic", "backuped_restored", "idle"):
        assert stack.alerts(sids[name]) == {}, name

    # Every raised alert reached the signed webhook (verified in the receiver).
    delivered = wait_for(
        lambda: {(p["data"]["sid"], p["data"]["kind"]) for p in stack.received}
        >= {(sids[n], k) for n, k in expected_alerts.items()} or None,
        GRACE_S, "the alert webhook deliveries",
    )  # fmt: skip
    assert delivered


def test_a_worker_killed_mid_flight_and_restarted_loses_no_check(stack: Stack):
    assert stack.worker is not None
    sid = stack.record("crash-room", ["backuped_never_restored"], stop_after_s=0.5)
    time.sleep(0.3)  # the follow-up jobs of the stop are being worked on
    stack.worker.send_signal(signal.SIGKILL)
    stack.worker.wait()
    time.sleep(DEADLINE_S / 2)
    stack.start_worker()  # the five-minute check was scheduled before the crash

    wait_for(lambda: "backup_not_uploaded" in stack.alerts(sid), ALERT_WITHIN_S,
             "the backup alert after a worker crash")  # fmt: skip


def test_a_gracefully_restarted_worker_keeps_its_scheduled_checks(stack: Stack):
    assert stack.worker is not None
    sid = stack.record("restart-room", ["stop_206"], stop_after_s=0.5)
    wait_for(lambda: stack.state(sid) == "stopped", 10, "the stop to be reconciled")
    stack.worker.send_signal(signal.SIGTERM)
    # Asked to stop, it exits 0: supervisors restart only a worker that failed.
    assert stack.worker.wait(30) == 0
    stack.start_worker()

    wait_for(lambda: "upload_status_unknown" in stack.alerts(sid), ALERT_WITHIN_S,
             "the scheduled check after a restart")  # fmt: skip


# Last: the stuck storage keeps this worker busy for a while afterwards.
@pytest.mark.timeout(300)
def test_a_worker_killed_in_the_middle_of_a_storage_check_loses_no_reconciliation(
    stack: Stack,
):
    assert stack.worker is not None
    reads_before = len(stack.stuck_reads)
    sid = stack.record("stuck-room", ["backuped_never_restored"], stop_after_s=0.5,
                       bucket=STUCK_BUCKET)  # fmt: skip
    # The five-minute check is running once the storage has a connection from it. The
    # session's lock alone is no sign: the short jobs of the session's callbacks take it too.
    wait_for(lambda: len(stack.stuck_reads) > reads_before, ALERT_WITHIN_S,
             "the storage check to start")  # fmt: skip
    time.sleep(0.5)
    assert stack.redis.exists(keys.session_lock(sid)), "the check holds the session"
    stack.worker.send_signal(signal.SIGKILL)
    stack.worker.wait()
    stack.start_worker()

    # The dead job's lock lapses (nobody renews it), the sweep takes the session over and
    # checks again: the alert is late by at most the lock's TTL, not by a job timeout.
    alert = wait_for(lambda: stack.alerts(sid).get("backup_not_uploaded"), LOCK_TTL_S + GRACE_S,
                     "the backup alert after a kill in mid-check")  # fmt: skip
    assert alert.evidence["reason"]
