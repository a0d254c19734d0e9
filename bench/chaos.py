"""`make chaos`: the ledger under faults. Nothing answered 2xx may be lost or stored twice.

A private redis-server (AOF everysec), gunicorn (2 workers) and one RQ worker with the
scheduler run as real processes, with a signed alert receiver. Sender threads play Agora:
signed callbacks for many recording sessions, reordered, ~10% sent twice (same noticeId,
fresh notifyMs and signature, as Agora's resends are), every non-2xx or broken connection
retried until a 2xx. Meanwhile the harness kills -9 the RQ worker while it runs a callback
job, kills -9 a gunicorn worker, and kills -9 redis-server and starts it again on the same
AOF. Then it waits for the workers to converge and compares the ledger:

- every noticeId answered 2xx is in its session's event stream exactly once;
- every session is in the lifecycle state its events imply;
- every alert those events imply exists (and only those), and its "raised" (and, where
  due, "resolved") transition reached the receiver; the same webhook-id twice is an
  at-least-once redelivery (reported), two different ids for one transition a failure.

The expected state and alerts of each kind of session are those of a fault-free run
(`python -m bench.chaos --no-faults` checks exactly these expectations).

    python -m bench.chaos --callbacks 20000      # what `make chaos` runs
    pytest tests/system/test_chaos.py           # the same code with ~2,500 callbacks
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import http.client
import json
import os
import queue
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

from redis import Redis
from redis.exceptions import RedisError
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer
from standardwebhooks import Webhook

from bench.processes import is_listening, stop, wait_for
from bench.traffic import _template, interleave
from webhook.alerts import alert_id
from webhook.jobs import callback_queue
from webhook.redis_server import RedisServer, free_port
from webhook.signature import HEADER_V2, sign
from webhook.store import CallbackStore, keys, now_ms
from webhook.store.alerts import AlertStore
from webhook.store.recordings import RecordingStore

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
SECRET = "chaos-callback-secret"
ALERT_SECRET = "whsec_" + base64.b64encode(b"chaos-alert-secret-32-bytes-long").decode()
QUEUE = "agora"
# Short enough that backuped sessions alert within the run, long enough that the check is a
# scheduled RQ job (enqueue_at), which must survive the worker kill and the Redis restart.
BACKUP_DEADLINE_S = 8
# A session is "recording" between its start events and its exit; under faults its exit's
# job may wait ~150 s for RQ to take over a killed job. Silence is not what this measures,
# so stale_session must not fire in between.
STALE_MARGIN_S = 900
# Agora waits 10 s for an answer.
HTTP_TIMEOUT_S = 10.0
# Give up on a callback after this long (a real outage; Agora retries for less).
GIVE_UP_S = 180.0


# --- sessions and what they must end as ---------------------------------------------


@dataclass(frozen=True)
class Expected:
    """A session's end state, as a fault-free run leaves it."""

    state: str
    # Alert kinds that must exist, open, each raised once.
    open_alerts: frozenset[str] = frozenset()
    # Alert kinds that must have been raised once and resolved once.
    resolved_alerts: frozenset[str] = frozenset()


# Sessions as Agora reports them when the app server does not forward its start call:
# reconciliation then goes by the callbacks alone, and the expectations below follow from
# workers/lifecycle.py (and were confirmed by a --no-faults run).
SESSION_KINDS: dict[str, tuple[float, Expected]] = {
    # recorder + uploader start, progress, recorder leave, uploaded (status 0), exit
    "clean": (0.55, Expected("uploaded")),
    # the same with uploaded status 1: Agora says the upload failed
    "upload_failed": (0.15, Expected("failed", open_alerts=frozenset({"upload_failed"}))),
    # an error (event 1), then leave and exit, no upload
    "recorder_error": (0.12, Expected("exited", open_alerts=frozenset({"recording_error"}))),
    # backuped (32): the files must reach the bucket, which nothing can check without the
    # start call, so the backup alert fires at the deadline (a scheduled job)
    "backuped": (0.10, Expected("backuped", open_alerts=frozenset({"backup_not_uploaded"}))),
    # a failover (12), then a clean upload, which resolves the failover alert
    "failover": (0.08, Expected("uploaded", resolved_alerts=frozenset({"failover"}))),
}


@dataclass(frozen=True)
class Session:
    sid: str
    kind: str
    bodies: tuple[dict[str, Any], ...]

    @property
    def expected(self) -> Expected:
        return SESSION_KINDS[self.kind][1]


def _events_of(kind: str, rng: random.Random) -> list[str]:
    """Event template prefixes, in Agora's order, with the variant of 31 after a colon."""
    start = ["40_", "30_", "44_", "43_"]
    progress = ["33_"] * rng.randint(1, 4)
    if kind == "clean":
        return [*start, *progress, "41_", "31_:ok", "11_"]
    if kind == "upload_failed":
        return [*start, *progress, "41_", "31_:failed", "11_"]
    if kind == "recorder_error":
        return [*start, "01_", "41_", "11_"]
    if kind == "backuped":
        return [*start, *progress, "41_", "32_", "11_"]
    if kind == "failover":
        return [*start, "12_", *progress, "41_", "31_:ok", "11_"]
    raise ValueError(kind)


_TEMPLATES: dict[str, dict[str, Any]] = {}


def make_session(kind: str, n: int, rng: random.Random) -> Session:
    """One session of `kind`: its callbacks in Agora's order, each with a new noticeId."""
    sid = secrets.token_hex(16)
    cname = f"chaos{n % 97}"
    # Agora's send time: it only orders the session's events (the summary's "latest").
    sendts = int(time.time() * 1000)
    bodies = []
    for sequence, event in enumerate(_events_of(kind, rng)):
        prefix, _, variant = event.partition(":")
        body = copy.deepcopy(
            _TEMPLATES.get(prefix) or _TEMPLATES.setdefault(prefix, _template(prefix))
        )
        body["noticeId"] = secrets.token_hex(16)
        body["sid"] = sid
        payload = body["payload"]
        payload.update(sid=sid, cname=cname, sequence=sequence, sendts=sendts)
        if prefix == "33_":
            payload["details"]["progress"] = min(10000, 2000 * sequence)
        if prefix == "31_":
            payload["details"]["status"] = 1 if variant == "failed" else 0
        sendts += 1000
        bodies.append(body)
    return Session(sid, kind, tuple(bodies))


def build_sessions(callbacks: int, rng: random.Random) -> list[Session]:
    """Sessions of every kind until about `callbacks` distinct callbacks."""
    names = list(SESSION_KINDS)
    weights = [SESSION_KINDS[n][0] for n in names]
    sessions: list[Session] = []
    total = 0
    while total < callbacks:
        n = len(sessions)
        # Every kind at least once, whatever the size; then by weight.
        kind = names[n] if n < len(names) else rng.choices(names, weights)[0]
        sessions.append(make_session(kind, n, rng))
        total += len(sessions[-1].bodies)
    return sessions


def send_plan(
    sessions: list[Session], rng: random.Random, *, duplicates: float, reorder: int
) -> list[dict[str, Any]]:
    """Every callback once, some twice, in an order Agora might produce: sessions side by
    side, events displaced by up to `reorder` places, resends a little later."""
    ordered = list(interleave([list(s.bodies) for s in sessions], concurrent=64))
    keyed: list[tuple[float, dict[str, Any]]] = []
    for index, body in enumerate(ordered):
        position = index + rng.uniform(0, reorder)
        keyed.append((position, body))
        if rng.random() < duplicates:
            keyed.append((position + rng.uniform(1, 60), body))
    keyed.sort(key=lambda item: item[0])
    return [body for _, body in keyed]


# --- the alert receiver --------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    webhook_id: str
    alert_id: str
    transition: str
    kind: str
    sid: str


class AlertReceiver(ThreadingHTTPServer):
    """Standard Webhooks endpoint: verifies every delivery and keeps it."""

    daemon_threads = True

    def __init__(self, secret: str) -> None:
        super().__init__((HOST, 0), _ReceiverHandler)
        self.webhook = Webhook(secret)
        self.deliveries: list[Delivery] = []
        self.refused = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_port}/alerts"


class _ReceiverHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        server = cast(AlertReceiver, self.server)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        try:
            payload = server.webhook.verify(body, dict(self.headers.items()))
        except Exception:  # noqa: BLE001  # any bad delivery is counted, never trusted
            with server.lock:
                server.refused += 1
            self.send_response(400)
            self.end_headers()
            return
        data = payload["data"]
        delivery = Delivery(
            webhook_id=self.headers["webhook-id"],
            alert_id=data["id"],
            transition=str(payload["type"]).removeprefix("alert."),
            kind=data["kind"],
            sid=data["sid"],
        )
        with server.lock:
            server.deliveries.append(delivery)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


# --- the processes -------------------------------------------------------------------


@dataclass
class Fault:
    at_s: float
    kind: str
    detail: str
    ok: bool = True


@dataclass
class Kill:
    """A callback job whose worker was killed under it, and when RQ ran it again."""

    job_id: str
    at: float  # monotonic time of the kill
    # False: the job had confirmed its hand-off (its last step) and died before RQ
    # recorded the success; RQ runs it again all the same (at-least-once).
    handoff_pending: bool
    done_s: float | None = None  # when RQ's re-run ended
    outcome: str = ""  # its final RQ status (finished, failed)


@dataclass
class Stack:
    """redis-server, gunicorn and one RQ worker, started and broken on purpose."""

    work: Path
    redis_server: RedisServer
    env: dict[str, str]
    log: Any
    web_port: int
    gunicorn: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None
    # Workers that exited although nobody killed them (restarted, as systemd would).
    worker_exits: list[int] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    _dead_executions: set[bytes] = field(default_factory=set)
    _stopping: bool = False
    # Held while the worker is replaced, so a planned kill is never taken for a crash.
    _worker_lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.web_port}"

    def redis(self) -> Redis:
        return Redis.from_url(self.redis_server.url, socket_timeout=5)

    def start(self) -> None:
        self.gunicorn = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.start_worker()
        wait_for(lambda: is_listening(f"{self.base}/readyz"), 30, "gunicorn to be ready")
        wait_for(lambda: len(self.gunicorn_workers()) == 2, 30, "both gunicorn workers")

    def start_worker(self) -> None:
        # A session of its own, so a kill takes the worker and its scheduler (a forked
        # child) together, as systemd's restart or a container's death does.
        with self._worker_lock:
            self.worker = subprocess.Popen(
                [sys.executable, "-m", "workers"], cwd=ROOT, env=self.env,
                stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def supervise_worker(self) -> None:
        """Restart a worker that exited by itself, 2 s later (systemd's RestartSec)."""
        if not self._worker_lock.acquire(blocking=False):
            return  # a planned kill is replacing it
        try:
            worker = self.worker
            if worker is None or self._stopping or worker.poll() is None:
                return
            self.worker_exits.append(worker.returncode)
            _kill_group(worker, signal.SIGKILL)  # its scheduler, if it outlived it
            time.sleep(2)
            self.start_worker()
        finally:
            self._worker_lock.release()

    def gunicorn_workers(self) -> list[int]:
        assert self.gunicorn is not None  # noqa: S101  # started first
        return _children(self.gunicorn.pid)

    def kill_gunicorn_worker(self) -> str:
        before = self.gunicorn_workers()
        victim = before[0]
        os.kill(victim, signal.SIGKILL)
        started = time.monotonic()
        wait_for(
            lambda: (
                len(set(self.gunicorn_workers()) - set(before)) == 1
                and len(self.gunicorn_workers()) == 2
            ),
            30,
            "gunicorn to replace its killed worker",
        )
        return f"pid {victim}; master replaced it in {time.monotonic() - started:.1f} s"

    def restart_redis(self) -> str:
        client = self.redis()
        try:
            info = client.info("persistence")
        finally:
            client.close()
        self.redis_server.kill()
        down = time.monotonic()
        self.redis_server.start(timeout_s=60)
        return (
            f"kill -9 and restart on the same AOF: down {time.monotonic() - down:.2f} s "
            f"(aof_delayed_fsync before: {info.get('aof_delayed_fsync')}, "
            f"pending bio fsync: {info.get('aof_pending_bio_fsync')})"
        )

    def kill_worker_mid_job(self, timeout_s: float = 60.0) -> tuple[bool, str]:
        """SIGKILL the worker while it runs a process_callback job; True if it did."""
        client = self.redis()
        registry = StartedJobRegistry(QUEUE, connection=client, serializer=JSONSerializer)
        try:
            deadline = time.monotonic() + timeout_s
            attempts = 0
            while time.monotonic() < deadline:
                # "<job id>:<execution id>"; a dead worker's entries stay until RQ takes
                # them over, so only the live worker's count.
                members = cast(list[bytes], client.zrange(registry.key, 0, -1))
                running = [m.decode() for m in members if m not in self._dead_executions]
                # callback-<hash>: a process_callback job (webhook.jobs.callback_job_id); a
                # delivery job would be taken over only after 180 + 60 s.
                member = next((m for m in running if m.startswith("callback-")), None)
                if member is None:
                    time.sleep(0.001)
                    continue
                with self._worker_lock:
                    worker = self.worker
                    assert worker is not None  # noqa: S101  # started before the faults
                    attempts += 1
                    _kill_group(worker, signal.SIGKILL)
                    # Everything running now ran on the dead worker.
                    self._dead_executions |= set(
                        cast(list[bytes], client.zrange(registry.key, 0, -1))
                    )
                    job_id = member.rsplit(":", 1)[0]
                    try:
                        job: Job | None = Job.fetch(
                            job_id, connection=client, serializer=JSONSerializer
                        )
                    except NoSuchJobError:
                        job = None
                    self.start_worker()
                # Still "started": the worker died with the job in its hands.
                if job is not None and job.get_status() == "started":
                    sid, notice_id, entry_id = job.args
                    pending = (sid, notice_id, entry_id) in set(pending_handoffs(client))
                    self.kills.append(Kill(job_id, time.monotonic(), pending))
                    stage = "before" if pending else "after"
                    return True, (
                        f"pid {worker.pid} killed in job {job_id[:20]}... (session {sid[:8]}, "
                        f"{stage} it confirmed its hand-off), attempt {attempts}; RQ takes it "
                        "over after its timeout + 60 s"
                    )
                time.sleep(1)  # the job had just finished: try the new worker
            return False, f"no callback job caught running in {timeout_s:g} s ({attempts} kills)"
        finally:
            client.close()

    def watch_kills(self, client: Redis) -> list[str]:
        """Note when RQ has run each killed job again; the ones it has not yet."""
        waiting = []
        for kill in self.kills:
            if kill.done_s is not None:
                continue
            try:
                job = Job.fetch(kill.job_id, connection=client, serializer=JSONSerializer)
                status = job.get_status()
                outcome = "started" if status is None else JobStatus(status).value
            except NoSuchJobError:
                outcome = "gone"
            if outcome in ("finished", "failed", "gone"):
                kill.done_s, kill.outcome = time.monotonic() - kill.at, outcome
            else:
                waiting.append(f"killed job {kill.job_id[:20]}... not yet run again")
        return waiting

    def close(self) -> None:
        self._stopping = True
        for process in (self.gunicorn,):
            if process is not None:
                with contextlib.suppress(AssertionError):
                    stop(process)
        worker = self.worker
        if worker is not None:
            with contextlib.suppress(AssertionError):
                stop(worker)
            _kill_group(worker, signal.SIGKILL)
        self.redis_server.stop()


def _kill_group(process: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the process group a worker leads (it and its scheduler), then reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def _children(pid: int) -> list[int]:
    """Live child pids of pid, from /proc (no psutil dependency)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # Fields after the command name, which is in parentheses and may hold spaces.
        rest = text.rsplit(")", 1)[1].split()
        if int(rest[1]) == pid and rest[0] != "Z":
            found.append(int(stat.parent.name))
    return sorted(found)


# --- Agora's side: senders with retries ----------------------------------------------


@dataclass
class Answers:
    """What the senders were told, per noticeId."""

    accepted: Counter[str] = field(default_factory=Counter)  # 2xx answers
    stored: Counter[str] = field(default_factory=Counter)  # answered "stored"
    retries: Counter[str] = field(default_factory=Counter)  # cause -> count
    gave_up: list[str] = field(default_factory=list)
    sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class AgoraClient:
    """One keep-alive connection; sends a callback until a 2xx, as Agora retries."""

    def __init__(self, port: int, answers: Answers) -> None:
        self.port = port
        self.answers = answers
        self.connection: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def deliver(self, template: dict[str, Any]) -> None:
        notice_id = template["noticeId"]
        first = time.monotonic()
        backoff = 0.05
        while True:
            status, result, cause = self.post(template)
            if 200 <= status < 300:
                with self.answers.lock:
                    self.answers.sent += 1
                    self.answers.accepted[notice_id] += 1
                    if result == "stored":
                        self.answers.stored[notice_id] += 1
                return
            with self.answers.lock:
                self.answers.retries[cause] += 1
            if time.monotonic() - first > GIVE_UP_S:
                with self.answers.lock:
                    self.answers.gave_up.append(notice_id)
                return
            time.sleep(backoff)
            backoff = min(1.0, backoff * 2)

    def post(self, template: dict[str, Any]) -> tuple[int, str, str]:
        # Agora stamps notifyMs on every attempt (and signs it with the body).
        body = dict(template, notifyMs=int(time.time() * 1000))
        raw = json.dumps(body, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", HEADER_V2: sign(raw, SECRET)}
        try:
            if self.connection is None:
                self.connection = http.client.HTTPConnection(
                    HOST, self.port, timeout=HTTP_TIMEOUT_S
                )
            self.connection.request("POST", "/agora/callback", body=raw, headers=headers)
            response = self.connection.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException) as err:
            self.close()
            return 0, "", f"connection: {type(err).__name__}"
        if response.will_close:
            self.close()
        if 200 <= response.status < 300:
            return response.status, str(json.loads(answer).get("result", "")), ""
        try:
            reason = str(json.loads(answer).get("reason", ""))
        except ValueError:
            reason = ""
        return response.status, "", f"{response.status} {reason}".strip()


class Sender(threading.Thread):
    """Takes callbacks off the shared queue until it gets None."""

    def __init__(self, port: int, work: queue.Queue[dict[str, Any] | None], answers: Answers):
        super().__init__(daemon=True)
        self.client = AgoraClient(port, answers)
        self.work = work
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while (body := self.work.get()) is not None:
                self.client.deliver(body)
        except BaseException as err:  # noqa: BLE001  # reported by the harness, not lost
            self.error = err
        finally:
            self.client.close()


class Trickle(threading.Thread):
    """Agora does not fall silent while a worker is replaced: new sessions keep arriving,
    one every `interval_s`, their callbacks a little apart."""

    def __init__(self, port: int, answers: Answers, rng: random.Random, interval_s: float):
        super().__init__(daemon=True)
        self.client = AgoraClient(port, answers)
        self.rng = rng
        self.interval_s = interval_s
        self.sessions: list[Session] = []
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        kinds = list(SESSION_KINDS)
        try:
            while not self.done.is_set():
                n = len(self.sessions)
                session = make_session(kinds[n % len(kinds)], 10_000 + n, self.rng)
                with self.lock:
                    self.sessions.append(session)
                for body in session.bodies:
                    self.client.deliver(body)
                    time.sleep(0.05)
                self.done.wait(self.interval_s)
        except BaseException as err:  # noqa: BLE001  # reported by the harness, not lost
            self.error = err
        finally:
            self.client.close()

    def stop(self) -> None:
        self.done.set()
        if self.ident is not None:  # started
            self.join()

    def snapshot(self) -> list[Session]:
        with self.lock:
            return list(self.sessions)


# --- the ledger ----------------------------------------------------------------------


@dataclass
class Ledger:
    """The store, the sessions and the receiver compared with the expectations."""

    accepted: int = 0  # distinct noticeIds of these sessions answered 2xx
    stored: int = 0  # distinct noticeIds of ours in the streams
    entries: int = 0  # stream entries of our sessions
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    unacknowledged: int = 0  # stored but never answered 2xx (a retry would find it)
    wrong_states: list[str] = field(default_factory=list)
    alerts_due: int = 0
    alerts_fired: int = 0
    resolutions_due: int = 0
    resolutions_fired: int = 0
    missing_alerts: list[str] = field(default_factory=list)
    unexpected_alerts: list[str] = field(default_factory=list)
    undelivered: list[str] = field(default_factory=list)
    twice_raised: list[str] = field(default_factory=list)
    redeliveries: int = 0
    pending_handoffs: int = 0
    failed_jobs: int = 0

    @property
    def problems(self) -> list[str]:
        found = []
        for name in ("lost", "duplicated", "wrong_states", "missing_alerts",
                     "unexpected_alerts", "undelivered", "twice_raised"):  # fmt: skip
            items = getattr(self, name)
            if items:
                found.append(f"{name}: {len(items)} (e.g. {', '.join(items[:3])})")
        if self.pending_handoffs:
            found.append(f"pending hand-offs: {self.pending_handoffs}")
        return found


def read_ledger(
    redis: Redis, sessions: list[Session], answers: Answers, deliveries: list[Delivery]
) -> Ledger:
    ledger = Ledger()
    in_store: Counter[str] = Counter()
    for chunk in _chunks(sessions, 200):
        pipe = redis.pipeline(transaction=False)
        for session in chunk:
            pipe.xrange(keys.events(session.sid))
        for entries in cast(list[list[tuple[bytes, dict[bytes, bytes]]]], pipe.execute()):
            for _, fields in entries:
                in_store[fields[b"nid"].decode()] += 1
    ledger.entries = sum(in_store.values())
    ledger.stored = len(in_store)
    ours = {body["noticeId"] for session in sessions for body in session.bodies}
    with answers.lock:
        accepted = {n for n in answers.accepted if n in ours}
    ledger.accepted = len(accepted)
    ledger.lost = sorted(n for n in accepted if in_store[n] == 0)
    ledger.duplicated = sorted(n for n, count in in_store.items() if count > 1)
    ledger.unacknowledged = sum(1 for n in in_store if n not in accepted)

    recordings, alerts = RecordingStore(redis), AlertStore(redis)
    by_transition: dict[tuple[str, str], set[str]] = {}
    for delivery in deliveries:
        by_transition.setdefault((delivery.alert_id, delivery.transition), set()).add(
            delivery.webhook_id
        )
    ledger.redeliveries = len(deliveries) - sum(len(ids) for ids in by_transition.values())
    for session in sessions:
        expected = session.expected
        state = recordings.facts(session.sid).state
        if state != expected.state:
            ledger.wrong_states.append(f"{session.sid[:8]} {session.kind}: {state}")
        found = {a.kind: a for a in alerts.for_session(session.sid)}
        due = {k: "open" for k in expected.open_alerts} | {
            k: "resolved" for k in expected.resolved_alerts
        }
        for kind in sorted(set(found) - set(due)):
            ledger.unexpected_alerts.append(f"{session.sid[:8]} {session.kind}: {kind}")
        for kind, state_due in due.items():
            ledger.alerts_due += 1
            identifier = alert_id(session.sid, kind)
            alert = found.get(kind)
            if alert is None or alert.state != state_due:
                got = alert.state if alert else "absent"
                ledger.missing_alerts.append(f"{session.sid[:8]} {kind}: {got}")
            raised = by_transition.get((identifier, "raised"), set())
            if raised:
                ledger.alerts_fired += 1
            else:
                ledger.undelivered.append(f"{session.sid[:8]} {kind} raised")
            if len(raised) > 1:
                ledger.twice_raised.append(f"{session.sid[:8]} {kind}: {len(raised)} episodes")
            if state_due == "resolved":
                ledger.resolutions_due += 1
                resolved = by_transition.get((identifier, "resolved"), set())
                if resolved:
                    ledger.resolutions_fired += 1
                else:
                    ledger.undelivered.append(f"{session.sid[:8]} {kind} resolved")
    sids = {session.sid for session in sessions}
    ledger.pending_handoffs = sum(1 for sid, _, _ in pending_handoffs(redis) if sid in sids)
    ledger.failed_jobs = callback_queue(redis, QUEUE).failed_job_registry.count
    return ledger


def pending_handoffs(redis: Redis) -> list[tuple[str, str, str]]:
    """(sid, noticeId, entry id) of every callback whose follow-up has not confirmed."""
    return CallbackStore(redis).pending_handoffs(older_than_ms=now_ms() + 3_600_000, limit=10**6)


def _chunks(items: list[Session], size: int) -> Iterator[list[Session]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- the run -------------------------------------------------------------------------


@dataclass(frozen=True)
class ChaosConfig:
    callbacks: int = 2500
    senders: int = 8
    # Sends per second: spread over seconds, so every fault meets traffic in flight (the
    # service takes ~1,500/s here; Agora's traffic comes as a stream, not a burst).
    rate: float = 250.0
    duplicates: float = 0.10
    reorder: int = 8
    faults: bool = True
    # Rounds of (gunicorn worker kill, Redis restart); the RQ worker is killed once per
    # round too. 0: one round below 10,000 callbacks, two from there.
    rounds: int = 0
    # After the sends: a new session every this many seconds until the sessions sent so far
    # have converged (0: silence, which shows how long an idle worker takes; see
    # docs/durability.md).
    trickle_s: float = 2.0
    converge_timeout_s: float = 420.0
    # The plan (kinds, order, resends); each run draws one, and prints it for a replay.
    seed: int = field(
        default_factory=lambda: int(os.environ.get("CHAOS_SEED") or secrets.randbits(32))
    )
    work_dir: Path | None = None


@dataclass
class ChaosReport:
    config: ChaosConfig
    sessions: Counter[str]
    trickled: int  # sessions sent while waiting for convergence
    planned: int  # distinct callbacks
    sends: int  # callbacks sent, resends included
    answers: Answers
    ledger: Ledger
    faults: list[Fault]
    worker_exits: list[int]
    receiver_refused: int
    send_s: float
    converge_s: float
    total_s: float
    converged: bool
    sender_errors: list[str]
    kills: list[Kill]
    work_dir: Path

    @property
    def failures(self) -> list[str]:
        found = list(self.ledger.problems)
        if not self.converged:
            found.append(f"did not converge within {self.config.converge_timeout_s:g} s")
        if self.answers.gave_up:
            found.append(f"gave up on {len(self.answers.gave_up)} callback(s)")
        restored = [n for n, count in self.answers.stored.items() if count > 1]
        if restored:
            # Answered "stored" twice: the first, acknowledged write was lost.
            found.append(f"answered 'stored' twice (an acknowledged write lost): {len(restored)}")
        found += [f"fault not injected: {f.kind}: {f.detail}" for f in self.faults if not f.ok]
        found += [f"sender crashed: {e}" for e in self.sender_errors]
        found += [
            f"killed job {k.job_id[:20]}... {k.outcome or 'never run again'}"
            for k in self.kills
            if k.outcome != "finished"
        ]
        if self.receiver_refused:
            found.append(f"alert receiver refused {self.receiver_refused} unverifiable deliveries")
        return found

    def table(self) -> str:
        a, g = self.answers, self.ledger
        sessions = self.sessions.total()
        twice = sum(1 for count in a.stored.values() if count > 1)
        exits = f"{len(self.worker_exits)} {self.worker_exits or ''}".strip()
        rows = [
            ("sessions", ", ".join(f"{k} {v}" for k, v in sorted(self.sessions.items()))
                         + f" ({self.trickled} of them while converging)"),
            ("callbacks", f"{self.planned} distinct, {self.sends} sends with resends"),
            ("accepted", f"{g.accepted} noticeIds answered 2xx "
                         f"({sum(a.accepted.values())} 2xx answers in all)"),
            ("stored", f"{g.stored} noticeIds in the streams ({g.entries} entries)"),
            ("lost", f"{len(g.lost)}"),
            ("duplicated", f"{len(g.duplicated)}"),
            ("stored twice by a retry", f"{twice}"),
            ("stored, never acknowledged", f"{g.unacknowledged}"),
            ("retries", ", ".join(f"{k}: {v}" for k, v in a.retries.most_common()) or "0"),
            ("gave up", f"{len(a.gave_up)}"),
            ("states as expected", f"{sessions - len(g.wrong_states)} of {sessions}"),
            ("alerts due", f"{g.alerts_due} (+{g.resolutions_due} resolutions)"),
            ("alerts fired", f"{g.alerts_fired} raised, {g.resolutions_fired} resolved; "
                             f"{len(g.twice_raised)} raised in a second episode, "
                             f"{g.redeliveries} redeliveries of a webhook-id"),
            ("unexpected alerts", f"{len(g.unexpected_alerts)}"),
            ("pending hand-offs", f"{g.pending_handoffs} (failed jobs: {g.failed_jobs})"),
            ("worker exits (unplanned)", exits),
            ("durations", f"send {self.send_s:.1f} s, converge {self.converge_s:.1f} s, "
                          f"total {self.total_s:.1f} s"),
        ]  # fmt: skip
        rows += [(f"fault @{f.at_s:.1f} s", f"{f.kind}: {f.detail}") for f in self.faults]
        rows += [
            ("killed job run again", "never" if k.done_s is None
             else f"{k.outcome} {k.done_s:.0f} s after the kill (RQ's takeover)")
            for k in self.kills
        ]  # fmt: skip
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value}" for name, value in rows]
        verdict = "FAIL: " + "; ".join(self.failures) if self.failures else "OK: nothing lost"
        replay = f"(seed {self.config.seed}: --seed replays the plan; logs: {self.work_dir})"
        return "\n".join([*lines, verdict, replay])


def fault_plan(config: ChaosConfig) -> list[tuple[float, str]]:
    """(fraction of the sends done, fault). The RQ kill comes first in each round: RQ takes
    a killed job over only after its timeout + 60 s, and the run waits for that."""
    if not config.faults:
        return []
    rounds = config.rounds or (1 if config.callbacks < 10_000 else 2)
    plan = []
    for r in range(rounds):
        base, span = r / rounds, 1 / rounds
        plan += [
            (base + 0.03 * span, "rq_worker"),
            (base + 0.35 * span, "gunicorn_worker"),
            (base + 0.65 * span, "redis"),
        ]
    return plan


def _service_env(redis_url: str, port: int, receiver: AlertReceiver, work: Path) -> dict[str, str]:
    metrics = work / "metrics"
    metrics.mkdir(exist_ok=True)
    return os.environ | {
        "REDIS_URL": redis_url, "AGORA_CALLBACK_SECRETS": SECRET, "APP_ENV": "production",
        "GUNICORN_BIND": f"{HOST}:{port}", "PORT": str(port), "WEB_CONCURRENCY": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics), "LOG_FORMAT": "json",
        "AGORA_QUEUE": QUEUE, "WORKER_CLASS": "simple",
        "SWEEP_INTERVAL_SECONDS": "1", "BACKUP_DEADLINE_SECONDS": str(BACKUP_DEADLINE_S),
        "STALE_MARGIN_SECONDS": str(STALE_MARGIN_S),
        "ALERT_WEBHOOK_URL": receiver.url, "ALERT_WEBHOOK_SECRET": ALERT_SECRET,
        # Nothing of the caller's may change what is measured: no Agora polling, no Slack.
        "AGORA_APP_ID": "", "AGORA_CUSTOMER_ID": "", "AGORA_CUSTOMER_SECRET": "",
        "ALERT_SLACK_WEBHOOK_URL": "", "STORAGE_CONFIG": "",
        # One Redis primary, the private one: no Sentinel, no Cluster, no replicas to wait for.
        "REDIS_SENTINELS": "", "REDIS_SENTINEL_MASTER": "", "STORE_CLUSTER_URL": "",
        "AGORA_STORE_MIN_REPLICAS": "",
    }  # fmt: skip


def run(config: ChaosConfig, *, progress: Callable[[str], None] = lambda _: None) -> ChaosReport:
    began = time.monotonic()
    rng = random.Random(config.seed)
    work = config.work_dir or Path(tempfile.mkdtemp(prefix="agora-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    sessions = build_sessions(config.callbacks, rng)
    plan = send_plan(sessions, rng, duplicates=config.duplicates, reorder=config.reorder)
    planned = sum(len(s.bodies) for s in sessions)
    progress(
        f"{len(sessions)} sessions, {planned} callbacks, {len(plan)} sends, seed {config.seed}; "
        f"logs in {work}"
    )

    receiver = AlertReceiver(ALERT_SECRET)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    redis_server = RedisServer(data_dir=work / "redis", appendonly=True).start()
    web_port = free_port()
    log = (work / "processes.log").open("ab")
    stack = Stack(
        work=work, redis_server=redis_server, log=log, web_port=web_port,
        env=_service_env(redis_server.url, web_port, receiver, work),
    )  # fmt: skip
    answers = Answers()
    faults: list[Fault] = []
    try:
        stack.start()
        work_queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=64)
        senders = [Sender(web_port, work_queue, answers) for _ in range(config.senders)]
        for sender in senders:
            sender.start()
        started = time.monotonic()
        pending_faults = fault_plan(config)
        fault_thread: threading.Thread | None = None

        def inject(kind: str) -> None:
            at = time.monotonic() - started
            try:
                if kind == "rq_worker":
                    ok, detail = stack.kill_worker_mid_job()
                elif kind == "gunicorn_worker":
                    ok, detail = True, stack.kill_gunicorn_worker()
                else:
                    ok, detail = True, stack.restart_redis()
            except Exception as err:  # noqa: BLE001  # a fault that failed is a finding
                ok, detail = False, f"{type(err).__name__}: {err}"
            faults.append(Fault(at, kind, detail, ok))
            progress(f"fault @{at:.1f} s {kind}: {detail}")

        for index, body in enumerate(plan):
            ahead = started + index / config.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            # One fault at a time, and never holding up the traffic: a fault whose turn
            # comes while the previous one is still under way waits for it.
            busy = fault_thread is not None and fault_thread.is_alive()
            if pending_faults and index >= pending_faults[0][0] * len(plan) and not busy:
                _, kind = pending_faults.pop(0)
                # In a thread: the senders keep going while the fault happens.
                fault_thread = threading.Thread(target=inject, args=(kind,), daemon=True)
                fault_thread.start()
            work_queue.put(body)
            if index % 500 == 0:
                stack.supervise_worker()
        for _ in senders:
            work_queue.put(None)
        for sender in senders:
            while sender.is_alive():
                sender.join(timeout=1)
                stack.supervise_worker()
        if fault_thread is not None:
            fault_thread.join()
        faults += [Fault(time.monotonic() - started, kind, "the sends ended first", ok=False)
                   for _, kind in pending_faults]  # fmt: skip
        send_s = time.monotonic() - started
        progress(f"sent in {send_s:.1f} s; waiting for the workers to converge")
        converge_began = time.monotonic()
        ledger, converged, trickle = converge(config, stack, receiver, sessions, answers, rng)
        converge_s = time.monotonic() - converge_began
        everything = sessions + trickle.sessions
        return ChaosReport(
            config=config,
            sessions=Counter(s.kind for s in everything),
            trickled=len(trickle.sessions),
            planned=sum(len(s.bodies) for s in everything),
            sends=len(plan) + sum(len(s.bodies) for s in trickle.sessions),
            answers=answers,
            ledger=ledger,
            faults=faults,
            worker_exits=list(stack.worker_exits),
            receiver_refused=receiver.refused,
            send_s=send_s,
            converge_s=converge_s,
            total_s=time.monotonic() - began,
            converged=converged,
            sender_errors=[
                repr(e) for e in [*(s.error for s in senders), trickle.error] if e is not None
            ],
            kills=list(stack.kills),
            work_dir=work,
        )
    finally:
        stack.close()
        receiver.shutdown()
        receiver.server_close()
        log.close()


def converge(
    config: ChaosConfig,
    stack: Stack,
    receiver: AlertReceiver,
    sessions: list[Session],
    answers: Answers,
    rng: random.Random,
) -> tuple[Ledger, bool, Trickle]:
    """Poll the ledger until it holds. While the sessions sent so far converge, new ones
    trickle in; then the trickled ones must converge too."""
    trickle = Trickle(stack.web_port, answers, rng, config.trickle_s)
    if config.trickle_s > 0:
        trickle.start()
    else:
        trickle.done.set()
    began = time.monotonic()
    client = stack.redis()
    ledger = Ledger()
    try:
        while time.monotonic() - began < config.converge_timeout_s:
            stack.supervise_worker()
            with receiver.lock:
                deliveries = list(receiver.deliveries)
            try:
                # Until RQ has run a killed job again, its second run may still change
                # something (an at-least-once effect the ledger must see).
                waiting = stack.watch_kills(client)
                ledger = read_ledger(client, sessions + trickle.snapshot(), answers, deliveries)
                if (
                    not trickle.done.is_set()
                    and not waiting
                    and not read_ledger(client, sessions, answers, deliveries).problems
                ):
                    trickle.stop()
                    continue  # the last trickled session must converge too
            except RedisError:
                time.sleep(1)
                continue
            if trickle.done.is_set() and not waiting and not ledger.problems:
                # A late second episode or redelivery would show up now.
                time.sleep(3)
                with receiver.lock:
                    deliveries = list(receiver.deliveries)
                ledger = read_ledger(client, sessions + trickle.snapshot(), answers, deliveries)
                return ledger, True, trickle
            time.sleep(2)
        # Timed out: the report covers every session sent, the last trickled ones too.
        trickle.stop()
        with receiver.lock:
            deliveries = list(receiver.deliveries)
        ledger = read_ledger(client, sessions + trickle.snapshot(), answers, deliveries)
        return ledger, False, trickle
    finally:
        trickle.stop()
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--callbacks", type=int,
                        default=int(os.environ.get("CHAOS_CALLBACKS", "20000")))  # fmt: skip
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--rate", type=float, default=ChaosConfig.rate, help="sends per second")
    parser.add_argument("--rounds", type=int, default=0, help="fault rounds (0: by size)")
    parser.add_argument("--no-faults", action="store_true", help="the fault-free reference")
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no traffic after the sends (shows an idle worker's takeover time)",
    )
    parser.add_argument(
        "--converge-timeout",
        type=float,
        help=f"seconds (default {ChaosConfig.converge_timeout_s:g}; 900 with --quiet)",
    )
    parser.add_argument("--seed", type=int, help="replay the plan of an earlier run")
    parser.add_argument("--work-dir", type=Path)
    args = parser.parse_args(argv)
    seeded = {} if args.seed is None else {"seed": args.seed}
    config = ChaosConfig(
        callbacks=args.callbacks, senders=args.senders, rate=args.rate, rounds=args.rounds,
        faults=not args.no_faults, work_dir=args.work_dir,
        trickle_s=0 if args.quiet else ChaosConfig.trickle_s,
        converge_timeout_s=args.converge_timeout or (900 if args.quiet else 420), **seeded,
    )  # fmt: skip
    report = run(config, progress=lambda line: print(line, flush=True))
    print(report.table())
    if report.failures:
        return 1
    if args.work_dir is None:
        # Logs and AOF are for investigating a failure; a passing run leaves nothing behind.
        shutil.rmtree(report.work_dir, ignore_errors=True)
        print("(the run passed: its logs are removed; --work-dir DIR keeps them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
