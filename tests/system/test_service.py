"""The real processes: gunicorn with deploy/gunicorn.conf.py, `python -m workers`, and
`agora-webhook dev` (what `make run` starts), talking over loopback to real redis-servers."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from bench.processes import (
    connections_by_process,
    is_listening,
    listening_sockets,
    process_tree,
    stop,
    wait_for,
)
from tests.conftest import DATA, SECRET, load_example
from webhook.redis_server import RedisServer, free_port
from webhook.schemas import load_callback
from webhook.signature import HEADER_V2, sign
from webhook.store import CallbackStore, keys, now_ms

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# The web process as every deployment runs it.
GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "wsgi:app"]


SID = load_example("40_")["payload"]["sid"]


def http_post(url: str, body: bytes, secret: str | None = SECRET) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if secret:
        headers[HEADER_V2] = sign(body, secret)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@contextmanager
def running_service(
    tmp_path: Path, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[str, Redis]]:
    """gunicorn + one worker with the scheduler, against a private AOF redis-server."""
    redis_server = RedisServer(data_dir=tmp_path / "redis").start()
    port = free_port()
    env = (
        os.environ
        | {
            "REDIS_URL": redis_server.url,
            "AGORA_CALLBACK_SECRETS": f"{SECRET},previous-secret",
            "APP_ENV": "production",
            "PORT": str(port),
            "GUNICORN_BIND": f"127.0.0.1:{port}",
        }
        | (extra_env or {})
    )
    log = (tmp_path / "service.log").open("wb")
    web = subprocess.Popen(
        GUNICORN,
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    worker = subprocess.Popen(
        [sys.executable, "-m", "workers"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: is_listening(f"{base}/readyz"), 20, "gunicorn to be ready")
        yield base, Redis.from_url(redis_server.url)
    finally:
        stop(web)
        stop(worker)
        redis_server.stop()
        log.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[str, Redis]]:
    with running_service(tmp_path) as running:
        yield running


def test_gunicorn_stores_every_example_and_the_worker_follows_up(service: tuple[str, Redis]):
    base, redis = service
    answers = []
    for path in sorted(DATA.glob("*.json")):
        answers.append(http_post(f"{base}/agora/callback", path.read_bytes()))

    assert answers == [(200, {"result": "stored"})] * len(answers)
    assert redis.hget(keys.stats(), "stored") == str(len(answers)).encode()
    # Follow-up events (uploaded, backuped, errors, exit, ...) are confirmed by the worker.
    wait_for(lambda: redis.zcard(keys.pending_handoffs()) == 0, 20, "the worker's follow-up")
    # Two gunicorn workers took them; any one of them reports the sum (multiprocess mode).
    for _ in range(4):
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
            text = response.read().decode()
        counted = sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "agora_callbacks_total"
        )
        assert counted == len(answers)
    with urllib.request.urlopen(f"{base}/readyz", timeout=10) as response:
        assert json.loads(response.read())["workers"] >= 1
    # The worker is another process (another host, in production): what it did reaches
    # /metrics through Redis, not through this host's multiprocess files.
    succeeded = sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "agora_worker_jobs_total" and sample.labels["outcome"] == "succeeded"
    )
    assert succeeded >= 1


@pytest.mark.parametrize("how", ["down", "read-only", "out of memory"])
def test_a_worker_started_while_redis_takes_no_writes_waits_for_it_and_then_works(
    tmp_path: Path, how: str
) -> None:
    """It used to exit within a second: systemd gives up after five quick failures
    (StartLimitBurst), so a worker restarted during an outage stayed down after it."""
    redis_server = RedisServer(data_dir=tmp_path / "redis").start()
    redis = Redis.from_url(redis_server.url)
    follow_up = load_example("31_")  # a hand-off for the worker's relay
    raw = json.dumps(follow_up).encode()
    assert CallbackStore(redis).record(load_callback(follow_up), raw, received_ms=now_ms())
    if how == "down":
        redis_server.stop()
    elif how == "read-only":
        redis.execute_command("REPLICAOF", "127.0.0.1", free_port())  # type: ignore[no-untyped-call]  # unannotated upstream
    else:
        redis.config_set("maxmemory", 1)
    env = os.environ | {"REDIS_URL": redis_server.url, "AGORA_CALLBACK_SECRETS": SECRET,
                        "APP_ENV": "production"}  # fmt: skip
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "workers"], cwd=ROOT, env=env,
                                  stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_for(lambda: "trying again" in log_path.read_text(), 20, "the worker to wait")
        assert worker.poll() is None, log_path.read_text()
        if how == "down":
            redis_server.start()
        elif how == "read-only":
            redis.execute_command("REPLICAOF", "NO", "ONE")  # type: ignore[no-untyped-call]  # unannotated upstream
        else:
            redis.config_set("maxmemory", 0)
        wait_for(lambda: redis.zcard(keys.pending_handoffs()) == 0, 30, "the follow-up")
    finally:
        code = stop(worker)
        redis_server.stop()
    assert code == 0, log_path.read_text()
    assert "Traceback" not in log_path.read_text()


def serves(port: int) -> bool:
    """gunicorn on the port answers /healthz. With SO_REUSEPORT a worker binds its socket
    before it imports the app, so on a loaded machine a request may wait seconds in that
    socket's backlog (not refused, not lost) before it is answered."""
    return is_listening(f"http://127.0.0.1:{port}/healthz", timeout=20)


@contextmanager
def gunicorn_alone(
    tmp_path: Path, port: int, name: str = "web", extra_env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """gunicorn with deploy/gunicorn.conf.py and two workers on 127.0.0.1:port, no RQ worker."""
    redis_server = RedisServer(data_dir=tmp_path / f"redis-{name}").start()
    env = os.environ | {
        "REDIS_URL": redis_server.url, "AGORA_CALLBACK_SECRETS": SECRET,
        "APP_ENV": "production", "GUNICORN_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "2",
    } | (extra_env or {})  # fmt: skip
    with (tmp_path / f"{name}.log").open("wb") as log:
        web = subprocess.Popen(
            GUNICORN,
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield web
    finally:
        stop(web)
        redis_server.stop()


def test_keep_alive_connections_are_spread_over_the_workers(tmp_path: Path) -> None:
    # deploy/gunicorn.conf.py gives each worker its own SO_REUSEPORT socket. On one shared
    # socket a few long-lived connections (Agora's, a load balancer's) often all went to
    # one worker while the other idled: make bench measured under half the throughput.
    port = free_port()
    connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(16)]
    with gunicorn_alone(tmp_path, port) as web:
        try:
            wait_for(lambda: listening_sockets(port) == 2, 20, "both workers to listen")
            for connection in connections:  # kept alive, as Agora's are
                connection.request("GET", "/healthz")
                assert connection.getresponse().read()
            workers = process_tree(web.pid)[1:]

            held = connections_by_process(port, workers)

            assert len(workers) == 2
            assert sum(held.values()) == 16
            assert all(held.values()), f"one worker holds every connection: {held}"
        finally:
            for connection in connections:
                connection.close()


def test_a_second_gunicorn_on_a_taken_port_refuses_to_start(tmp_path: Path) -> None:
    # With SO_REUSEPORT it could bind the port too and silently take half the callbacks.
    port = free_port()
    with gunicorn_alone(tmp_path, port, "first"):
        wait_for(lambda: listening_sockets(port) == 2, 20, "the first gunicorn to listen")
        with gunicorn_alone(tmp_path, port, "second") as second:
            assert second.wait(timeout=30) == 1
        assert f"127.0.0.1:{port} is already in use" in (tmp_path / "second.log").read_text()
        assert listening_sockets(port) == 2
        assert serves(port)


@pytest.fixture(scope="module")
def installed_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project built as a wheel and installed into a directory of its own: what an
    image or a `pip install` holds, with no checkout (no deploy/, no wsgi.py) beside it."""
    work = tmp_path_factory.mktemp("installed")
    source = work / "source"
    for name in ("webhook", "workers", "simulator"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = subprocess.run([*pip, "wheel", "--no-deps", "-w", str(work / "dist"), str(source)],
                           check=True, capture_output=True, text=True, timeout=300)  # fmt: skip
    (work / "build.log").write_text(build.stdout + build.stderr)
    (wheel,) = (work / "dist").glob("*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(work / "site"), str(wheel)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    return work / "site"


def test_the_package_builds_without_setuptools_warnings(installed_package: Path) -> None:
    # The Lua scripts and templates are data directories: declared as namespace packages,
    # or setuptools prints a screenful of "Package would be ignored" on every `make run`.
    assert "Warning" not in (installed_package.parent / "build.log").read_text()
    assert (installed_package / "webhook/store/lua/record_callback.lua").is_file()
    assert (installed_package / "webhook/templates/dashboard/base.html").is_file()


def test_serve_runs_from_the_installed_package_alone(
    tmp_path: Path, installed_package: Path
) -> None:
    port = free_port()
    redis_server = RedisServer(data_dir=tmp_path / "redis").start()
    env = os.environ | {
        # Ahead of the checkout's editable install: the package comes from the wheel.
        "PYTHONPATH": str(installed_package),
        "REDIS_URL": redis_server.url, "AGORA_CALLBACK_SECRETS": SECRET,
        "APP_ENV": "production", "GUNICORN_BIND": f"127.0.0.1:{port}",
    }  # fmt: skip
    command = [sys.executable, "-c", "from webhook.cli import main; main()", "serve"]
    with (tmp_path / "serve.log").open("wb") as log:
        serve = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for(lambda: is_listening(f"http://127.0.0.1:{port}/readyz"), 30, "serve")
        body = json.dumps(load_example("40_")).encode()
        status, answer = http_post(f"http://127.0.0.1:{port}/agora/callback", body)
        assert (status, answer) == (200, {"result": "stored"})
    finally:
        code = stop(serve)
        redis_server.stop()
    output = (tmp_path / "serve.log").read_text()
    assert code == 0, output
    assert "Traceback" not in output, output
    assert str(installed_package / "webhook") in subprocess.run(
        [sys.executable, "-c", "import webhook; print(webhook.__file__)"],
        env=env, cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


@pytest.mark.parametrize(
    "setting",
    [{"AGORA_MAX_BODY_BYTES": "abc"}, {"GUNICORN_THREADS": "four"}, {"AGORA_CALLBACK_SECRETS": ""}],
    ids=["a service setting", "a gunicorn setting", "no secret in production"],
)
def test_a_bad_setting_stops_gunicorn_with_one_line_and_status_2(
    tmp_path: Path, setting: dict[str, str]
) -> None:
    with gunicorn_alone(tmp_path, free_port(), extra_env=setting) as web:
        assert web.wait(timeout=30) == 2  # systemd's RestartPreventExitStatus=2
    output = (tmp_path / "web.log").read_text()
    assert "Traceback" not in output, output
    assert output.startswith("configuration error: "), output
    assert len(output.strip().splitlines()) == 1, output


def test_a_malformed_storage_config_stops_the_worker_with_one_line_and_status_2(
    tmp_path: Path,
) -> None:
    broken = tmp_path / "storage.json"
    broken.write_text('{"buckets": {')
    env = os.environ | {"REDIS_URL": "redis://127.0.0.1:1/0", "AGORA_CALLBACK_SECRETS": SECRET,
                        "APP_ENV": "production", "STORAGE_CONFIG": str(broken)}  # fmt: skip
    worker = subprocess.run([sys.executable, "-m", "workers"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert worker.returncode == 2  # systemd's RestartPreventExitStatus=2
    assert worker.stderr.startswith(f"configuration error: storage config {broken}"), worker.stderr
    assert len(worker.stderr.strip().splitlines()) == 1, worker.stderr


def test_gunicorn_leaves_no_metrics_directory_behind_and_says_where_it_listens(
    tmp_path: Path,
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    port = free_port()
    temp_env = {"TMPDIR": str(tmp), "PROMETHEUS_MULTIPROC_DIR": ""}
    with gunicorn_alone(tmp_path, port, "first", temp_env):
        wait_for(lambda: listening_sockets(port) == 2, 20, "gunicorn to listen")
        assert [p.name[:14] for p in tmp.iterdir()] == ["agora-metrics-"]
        with gunicorn_alone(tmp_path, port, "refused", temp_env) as refused:
            assert refused.wait(timeout=30) == 1  # the port is taken
    assert list(tmp.iterdir()) == []
    log = (tmp_path / "first.log").read_text()
    assert f"Listening at: http://127.0.0.1:{port} (each worker on its own socket)" in log
    assert "Listening at:  (" not in log  # gunicorn's own line, which names no address


@pytest.mark.parametrize("asked", [False, True], ids=["by default", "GUNICORN_ACCESS_LOG=-"])
def test_an_access_log_is_written_only_when_asked_for(tmp_path: Path, asked: bool) -> None:
    port = free_port()
    with gunicorn_alone(tmp_path, port, extra_env={"GUNICORN_ACCESS_LOG": "-"} if asked else {}):
        wait_for(lambda: listening_sockets(port) == 2, 20, "gunicorn to listen")
        assert serves(port)
    assert ("GET /healthz" in (tmp_path / "web.log").read_text()) is asked


def test_gunicorn_restarts_at_once_on_a_port_its_last_run_served(tmp_path: Path) -> None:
    # The previous run's connections linger in TIME_WAIT; they must not count as in use.
    port = free_port()
    with gunicorn_alone(tmp_path, port, "first"):
        wait_for(lambda: listening_sockets(port) == 2, 20, "the first gunicorn to listen")
        for _ in range(5):
            assert serves(port)
    with gunicorn_alone(tmp_path, port, "again"):
        wait_for(lambda: listening_sockets(port) == 2, 20, "the restarted gunicorn to listen")
        assert serves(port)


def test_gunicorn_answers_bad_input_with_json_errors(service: tuple[str, Redis]):
    base, _ = service
    status, body = http_post(f"{base}/agora/callback", b"{broken")
    assert (status, body["reason"]) == (400, "invalid_payload")
    status, body = http_post(
        f"{base}/agora/callback", json.dumps(load_example("40_")).encode(), None
    )
    assert (status, body["reason"]) == (401, "signature_missing")


def raw_request(base: str, request: bytes) -> tuple[int, dict[str, Any]]:
    """One request as bytes on its own connection: what no HTTP client library would send."""
    host, port = urllib.parse.urlsplit(base).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(request)
        connection.shutdown(socket.SHUT_WR)  # the client stops sending, as a cut-off one does
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


CHUNKED_HEAD = (b"POST /agora/callback HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Transfer-Encoding: chunked\r\n")  # fmt: skip


@pytest.mark.parametrize(
    ("request_bytes", "status", "reason"),
    [
        (CHUNKED_HEAD + b"Content-Type: application/json\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
         400, "invalid_payload"),  # not a chunk size
        (CHUNKED_HEAD + b"Content-Type: application/json\r\n\r\n5\r\nabc", 400,
         "invalid_payload"),  # cut off in the middle of a chunk
        (CHUNKED_HEAD + b"Content-Type: text/plain\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
         415, "unsupported_media_type"),  # refused, then unreadable when kept
    ],
)  # fmt: skip
def test_a_malformed_chunked_body_is_answered_in_json_and_kept(
    service: tuple[str, Redis], request_bytes: bytes, status: int, reason: str
):
    base, redis = service

    answer = raw_request(base, request_bytes)

    assert (answer[0], answer[1]["reason"]) == (status, reason)
    kept = CallbackStore(redis).rejected()
    assert [(r.status, r.reason) for r in kept] == [(status, reason)]


def test_clients_that_never_finish_their_body_do_not_hold_callbacks_up(
    service: tuple[str, Redis],
):
    base, _ = service
    host, port = urllib.parse.urlsplit(base).netloc.split(":")
    stalled = []
    try:
        for _ in range(12):  # more than gunicorn's 2 workers x 4 threads
            connection = socket.create_connection((host, int(port)), timeout=30)
            connection.sendall(b"POST /agora/callback HTTP/1.1\r\nHost: x\r\n"
                               b"Content-Type: application/json\r\nContent-Length: 1000\r\n"
                               b"\r\n{\"noticeId\"")  # fmt: skip
            stalled.append(connection)

        status, answer = http_post(  # urlopen gives up after 10 s, as Agora does
            f"{base}/agora/callback", json.dumps(load_example("40_")).encode()
        )

        assert (status, answer) == (200, {"result": "stored"})
        for connection in stalled:
            assert connection.recv(65536).startswith(b"HTTP/1.1 400 ")
    finally:
        for connection in stalled:
            connection.close()


def test_make_run_says_why_when_its_redis_port_is_taken(tmp_path: Path):
    redis_port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env |= {"PORT": str(free_port()), "LOCAL_REDIS_PORT": str(redis_port),
            "AGORA_VAR_DIR": str(tmp_path / "var"), "APP_ENV": "development"}  # fmt: skip
    with socket.create_server(("127.0.0.1", redis_port)):
        result = subprocess.run(
            [str(BIN / "agora-webhook"), "dev"], cwd=ROOT, env=env,
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    assert "Address already in use" in result.stderr
    assert "LOCAL_REDIS_PORT" in result.stderr


def ctrl_c(process: subprocess.Popen[bytes]) -> int:
    """What Ctrl-C in a terminal does: SIGINT to the job's whole process group."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
    return stop(process, signal.SIGINT)


def test_make_run_starts_everything_accepts_a_signed_callback_and_stops_on_ctrl_c(
    tmp_path: Path,
):
    port, redis_port = free_port(), free_port()
    unset = ("REDIS_URL", "AGORA_CALLBACK_SECRETS", "API_TOKENS")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env |= {
        "PORT": str(port),
        "LOCAL_REDIS_PORT": str(redis_port),
        "AGORA_VAR_DIR": str(tmp_path / "var"),
        "APP_ENV": "development",
    }
    output_file = tmp_path / "make-run.log"
    # Its own process group, as a shell runs a job: Ctrl-C is SIGINT to the whole group.
    with output_file.open("wb") as log:
        dev = subprocess.Popen(
            [str(BIN / "agora-webhook"), "dev"], cwd=ROOT, env=env,
            stdout=log, stderr=subprocess.STDOUT, process_group=0,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/agora/callback"
    started: list[int] = []
    try:
        wait_for(lambda: is_listening(f"http://127.0.0.1:{port}/readyz"), 30, "make run")
        sent = subprocess.run(
            [str(BIN / "agora-webhook"), "send", str(DATA / "40_recorder_started.json"),
             "--url", url],
            env=env, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert sent.stdout.strip() == '200 {"result":"stored"}'
        started = process_tree(dev.pid)[1:]  # redis-server, gunicorn, the worker
        # The dashboard's and API's token is the one make run made (and named, not printed).
        token = (tmp_path / "var" / "dev-api-token").read_text().strip()
        assert token not in output_file.read_text()
        listed = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/recordings",
                                        headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        with urllib.request.urlopen(listed, timeout=10) as answer:  # loopback
            assert [r["sid"] for r in json.load(answer)["recordings"]] == [SID]
        # The printed exports point the operator CLI at this run's Redis.
        (exports,) = [line.split(": ", 1)[1] for line in output_file.read_text().splitlines()
                      if line.startswith("operator CLI")]  # fmt: skip
        shell_env = {k: v for k, v in env.items() if k != "APP_ENV"}
        shown = subprocess.run(
            ["/bin/bash", "-c", f'{exports} && "$0" show {SID}', str(BIN / "agora-webhook")],
            env=shell_env, capture_output=True, text=True, timeout=30, check=False,
            cwd="/",  # another shell, anywhere
        )  # fmt: skip
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert json.loads(shown.stdout)["sid"] == SID
    finally:
        code = ctrl_c(dev)
        leftovers = [pid for pid in started if Path(f"/proc/{pid}").exists()]
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
    output = output_file.read_text()
    assert code == 0, output
    assert len(started) == 3, started
    assert leftovers == [], output
    # Everything stopped in order, Redis last: nothing met a Redis that had gone first.
    assert "Traceback" not in output, output
    assert " ERROR " not in output, output
    assert output.rstrip().endswith("stopped"), output
    assert f"callback URL: {url}" in output
    # A port of its own, a data directory of its own: a second make run never shares one.
    data = tmp_path / "var" / f"redis-{redis_port}"
    assert (data / "appendonlydir").exists() or any(data.glob("appendonly*"))
    assert not is_listening(f"http://127.0.0.1:{port}/healthz")
