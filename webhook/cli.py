"""`agora-webhook`: developer and operator commands."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import BinaryIO, TextIO, cast

import click
from redis import Redis, RedisCluster
from redis.exceptions import RedisError

from webhook.config import Settings
from webhook.errors import ConfigError, WebhookError
from webhook.intake import accept
from webhook.redis_server import DataDirError, RedisServer
from webhook.reports import recording_document, timeline_document
from webhook.schemas import STATES
from webhook.signature import HEADER_V1, HEADER_V2, sign
from webhook.store import CallbackStore, connect, keys, now_ms
from webhook.store.alerts import AlertStore
from webhook.store.connections import connect_cluster
from webhook.store.recordings import RecordingStore

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VAR = Path(os.environ.get("AGORA_VAR_DIR", PROJECT_ROOT / "var"))
DEV_SECRET_FILE = VAR / "dev-callback-secret"
DEV_TOKEN_FILE = VAR / "dev-api-token"
EXAMPLE = PROJECT_ROOT / "tests" / "data" / "callbacks" / "40_recorder_started.json"
DEFAULT_LOCAL_REDIS_PORT = 6390


def _dev_secret(path: Path) -> str:
    """A local development secret kept in `path` (created on first use, readable by us only)."""
    if not path.exists():
        VAR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(24))
        path.chmod(0o600)
    return path.read_text().strip()


def _callback_secret() -> str:
    """The first configured secret, else the local development one."""
    configured = [s for s in os.environ.get("AGORA_CALLBACK_SECRETS", "").split(",") if s]
    if configured:
        return configured[0].strip()
    return _dev_secret(DEV_SECRET_FILE)


def _local_redis_port() -> int:
    value = os.environ.get("LOCAL_REDIS_PORT", str(DEFAULT_LOCAL_REDIS_PORT))
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise click.ClickException(f"LOCAL_REDIS_PORT={value!r} is not a port number")
    return int(value)


class _Commands(click.Group):
    """Failures an operator can act on are one line and exit code 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except RedisError as err:
            # redis-py names the host and port, never the URL's password.
            raise click.ClickException(f"Redis: {err}") from None


@click.group(cls=_Commands)
def main() -> None:
    """Agora Cloud Recording callback service."""


@main.command("sign")
@click.argument("body_file", type=click.File("rb"))
@click.option("--sha1", is_flag=True, help="The legacy Agora-Signature (HMAC-SHA1) instead.")
def sign_command(body_file: BinaryIO, sha1: bool) -> None:
    """Print the signature Agora would send for BODY_FILE (with AGORA_CALLBACK_SECRETS)."""
    click.echo(sign(body_file.read(), _callback_secret(), "sha1" if sha1 else "sha256"))


@main.command("send")
@click.argument("body_file", type=click.File("rb"))
@click.option("--url", default="http://127.0.0.1:8000/agora/callback", show_default=True)
def send_command(body_file: BinaryIO, url: str) -> None:
    """POST BODY_FILE to URL, signed as Agora signs it."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise click.BadParameter(f"{url!r} is not an http:// or https:// URL", param_hint="--url")
    body = body_file.read()
    secret = _callback_secret()
    request = urllib.request.Request(  # noqa: S310  # the URL is the operator's own
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            HEADER_V2: sign(body, secret),
            HEADER_V1: sign(body, secret, "sha1"),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310  # same
            click.echo(f"{response.status} {response.read().decode()}")
    except urllib.error.HTTPError as err:
        click.echo(f"{err.code} {err.read().decode()}")
        sys.exit(1)
    except (urllib.error.URLError, OSError) as err:  # no answer: refused, timed out, DNS
        raise click.ClickException(f"{url}: {getattr(err, 'reason', err)}") from None


@main.command("dev")
@click.option("--port", envvar="PORT", default=8000, show_default=True)
def dev_command(port: int) -> None:
    """Run the whole service locally: Redis (unless REDIS_URL is set), gunicorn, a worker."""
    env = dict(os.environ)
    env.setdefault("APP_ENV", "development")
    env["PORT"] = str(port)
    env["AGORA_CALLBACK_SECRETS"] = env.get("AGORA_CALLBACK_SECRETS") or _callback_secret()
    # The dashboard and the read API need a token: a local one unless API_TOKENS is set.
    env["API_TOKENS"] = env.get("API_TOKENS") or _dev_secret(DEV_TOKEN_FILE)
    # Ctrl-C in a terminal sends SIGINT to every process of the foreground job at once:
    # Redis would go while gunicorn and the worker still use it. Each child gets a process
    # group of its own instead, so only this runner hears it, and stops them in order:
    # gunicorn (graceful: it answers what is in flight) and the worker (it finishes its
    # job), then Redis.
    redis: RedisServer | None = None
    if not env.get("REDIS_URL"):
        redis_port = _local_redis_port()
        # A second `make run` on another port gets data of its own: two servers appending to
        # one directory would mix, then corrupt, each other's files.
        data_dir = VAR / (
            "redis" if redis_port == DEFAULT_LOCAL_REDIS_PORT else f"redis-{redis_port}"
        )
        redis = RedisServer(data_dir=data_dir, port=redis_port, own_process_group=True)
        click.echo(f"starting redis-server on {redis.url} (AOF everysec, data in {redis.data_dir})")
        try:
            redis.start()
        except DataDirError as err:
            raise click.ClickException(str(err)) from None
        except (RuntimeError, TimeoutError) as err:
            # Most often the port is taken: another `make run`, or its Redis left behind.
            raise click.ClickException(
                f"{err}\nIs another `make run` still running? Stop it, or choose another port "
                "with LOCAL_REDIS_PORT, or use a Redis of your own with REDIS_URL."
            ) from None
        env["REDIS_URL"] = redis.url
    names = ("gunicorn", "worker")
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "wsgi:app"],
            cwd=PROJECT_ROOT,
            env=env,
            process_group=0,
        ),
        subprocess.Popen(
            [sys.executable, "-m", "workers"], cwd=PROJECT_ROOT, env=env, process_group=0
        ),
    ]
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    # SIGHUP too: a closed terminal must not leave the children running without us.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)
    url = f"http://127.0.0.1:{port}/agora/callback"
    click.echo(
        f"\ncallback URL: {url}\n"
        f"try it:       .venv/bin/agora-webhook send {EXAMPLE.relative_to(PROJECT_ROOT)}"
        f" --url {url}\n"
        f"or with curl: curl -X POST {url} -H 'Content-Type: application/json' "
        f'-H "{HEADER_V2}: $(.venv/bin/agora-webhook sign FILE)" --data-binary @FILE\n'
        f"dashboard:    http://127.0.0.1:{port}/dashboard/ ({_token_hint()})\n"
        f"operator CLI, in another shell: {_cli_environment(env)}\n"
        "Ctrl-C stops everything.\n"
    )
    exit_code = 0
    try:
        while not stopping:
            for name, child in zip(names, children, strict=True):
                if child.poll() is not None:
                    click.echo(f"{name} exited with {child.returncode}; stopping", err=True)
                    exit_code = 1
                    stopping = True
            time.sleep(0.2)
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=25)
            except subprocess.TimeoutExpired:
                child.kill()
        if redis is not None:
            redis.stop()
        click.echo("stopped")
    sys.exit(exit_code)


def _token_hint() -> str:
    """Where the dashboard's token is, never the token itself (terminals get logged)."""
    if os.environ.get("API_TOKENS"):
        return "log in with one of your API_TOKENS"
    return f"log in with the token in {_shown(DEV_TOKEN_FILE)}"


def _cli_environment(env: dict[str, str]) -> str:
    """The exports that point agora-webhook at this run's Redis, secrets by file only: a
    REDIS_URL of yours (maybe with a password) is never printed, you have it already."""
    exports = [f"APP_ENV={env['APP_ENV']}"]
    if not os.environ.get("REDIS_URL"):
        exports.insert(0, f"REDIS_URL={env['REDIS_URL']}")  # ours: loopback, no password
    if not os.environ.get("AGORA_CALLBACK_SECRETS"):
        # Absolute: the line is for another shell, maybe in another directory.
        exports.append(
            f"AGORA_CALLBACK_SECRETS=$(cat {shlex.quote(str(DEV_SECRET_FILE.resolve()))})"
        )
    return "export " + " ".join(exports)


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --- operator commands: they read the service's environment (REDIS_URL, ...) -------------


@dataclass(frozen=True)
class _Ops:
    settings: Settings
    redis: Redis
    store: CallbackStore
    recordings: RecordingStore
    alerts: AlertStore


def _ops() -> _Ops:
    try:
        settings = Settings.from_env()
    except ConfigError as err:
        raise click.ClickException(f"configuration: {err.message}") from None
    redis = connect(
        settings.redis_url, timeout=timedelta(seconds=5),
        sentinels=settings.redis_sentinels, sentinel_master=settings.redis_sentinel_master,
    )  # fmt: skip
    store = (
        connect_cluster(settings.store_cluster_url, timeout=timedelta(seconds=5))
        if settings.store_cluster_url
        else redis
    )
    return _Ops(
        settings,
        redis,
        CallbackStore(store, retention=settings.retention, dedupe_window=settings.dedupe_window,
                      rejected_max=settings.rejected_max),
        RecordingStore(redis, retention=settings.retention),
        AlertStore(redis, retention=settings.retention),
    )  # fmt: skip


def _print_json(document: object) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=True))


@main.command("show")
@click.argument("sid")
@click.option("--events", is_flag=True, help="Add the event timeline.")
def show_command(sid: str, events: bool) -> None:
    """Everything known about one recording session."""
    ops = _ops()
    found = recording_document(sid, ops.store, ops.recordings, ops.alerts)
    if found is None:
        raise click.ClickException(f"no recording {sid!r}")
    if events:
        found["timeline"] = timeline_document(sid, ops.store)
    _print_json(found)


# Each wait for new events is shorter than the client's socket timeout (redis-py's default,
# 5 s): a wait as long as that ended tail with a timeout after 5 s of quiet.
TAIL_BLOCK_MS = 2000


@main.command("tail")
@click.argument("sid")
def tail_command(sid: str) -> None:
    """Follow one session's new events as JSON lines (Ctrl-C to stop)."""
    ops = _ops()
    if ops.settings.store_cluster_url:
        redis: Redis | RedisCluster = connect_cluster(ops.settings.store_cluster_url, timeout=None)
    else:
        redis = connect(
            ops.settings.redis_url, timeout=None, sentinels=ops.settings.redis_sentinels,
            sentinel_master=ops.settings.redis_sentinel_master,
        )  # fmt: skip
    last: bytes | str = "$"
    try:
        while True:
            answer = cast(
                list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]],
                redis.xread({keys.events(sid): last}, block=TAIL_BLOCK_MS, count=100),
            )
            for _, entries in answer or ():
                for entry_id, fields in entries:
                    last = entry_id
                    click.echo(json.dumps({
                        "entry_id": entry_id.decode(), "event_type": int(fields[b"type"]),
                        "sequence": fields[b"seq"].decode() or None,
                        "received_ms": int(fields[b"recv"]), "notice_id": fields[b"nid"].decode(),
                    }))  # fmt: skip
    except KeyboardInterrupt:
        pass


@main.command("alerts")
@click.option("--state", type=click.Choice(["open", "acknowledged", "resolved"]), default="open")
@click.option("--kind", default=None, help="Only this kind, e.g. backup_not_uploaded.")
def alerts_command(state: str, kind: str | None) -> None:
    """Alerts in one state, newest change first."""
    for alert in _ops().alerts.in_state(state, limit=1000):  # type: ignore[arg-type]  # a Choice of the states
        if kind is None or alert.kind == kind:
            click.echo(f"{alert.id}  {alert.severity:8s} {alert.kind:22s} {alert.sid}  "
                       f"{_escape_controls(alert.message)}")  # fmt: skip


def _escape_controls(text: str) -> str:
    """Text from callbacks (an alert's message quotes Agora's errorMsg) as one inert line:
    a control character, an escape sequence's ESC first, is written as Python writes it
    ("\\x1b", "\\n"), so it can neither drive the terminal nor forge a line of output."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@main.command("ack")
@click.argument("alert_id")
def ack_command(alert_id: str) -> None:
    """Acknowledge an alert (it still resolves by itself when its condition clears)."""
    alert = _ops().alerts.acknowledge(alert_id, now_ms=now_ms())
    if alert is None:
        raise click.ClickException(f"no alert {alert_id!r}")
    click.echo(f"{alert.id} {alert.state}")


@main.command("replay-rejected")
@click.argument("entry_id")
def replay_rejected_command(entry_id: str) -> None:
    """Take a refused callback in again through the normal path (signature included)."""
    ops = _ops()
    if ops.settings.accepts_unsigned:
        # Without a secret the body would be stored unverified, however it was refused.
        raise click.ClickException(
            "a replay is verified as the endpoint verifies a callback: set "
            "AGORA_CALLBACK_SECRETS (make run keeps its own in var/dev-callback-secret)"
        )
    kept = ops.store.rejected_entry(entry_id)
    if kept is None:
        raise click.ClickException(f"no refused request {entry_id!r}")
    if kept.body_truncated:
        raise click.ClickException("the kept body was truncated at the size limit")
    try:
        _, result = accept(
            ops.settings, ops.store, kept.body, signature_v2=kept.headers.get(HEADER_V2),
            signature_v1=kept.headers.get(HEADER_V1), received_ms=now_ms(),
        )  # fmt: skip
    except WebhookError as err:
        raise click.ClickException(f"{err.reason}: {err.message}") from None
    click.echo("stored" if result.outcome == "stored" else "duplicate")


@main.command("export")
@click.option("--out", type=click.File("w"), default="-", show_default=True)
@click.option("--events/--no-events", default=True, show_default=True)
def export_command(out: TextIO, events: bool) -> None:
    """Every retained session (and its events) as NDJSON, newest first."""
    ops = _ops()
    total = ops.store.active_sessions()
    after: tuple[int, str] | None = None
    with click.progressbar(length=total, label="exporting", file=sys.stderr) as bar:
        while page := ops.store.recent_sessions(after=after, limit=500):
            for sid, score in page:
                document = recording_document(sid, ops.store, ops.recordings, ops.alerts)
                if document is not None:
                    out.write(json.dumps({"type": "session"} | document) + "\n")
                timeline = timeline_document(sid, ops.store) if events else None
                for event in (timeline or {}).get("events", ()):
                    out.write(json.dumps({"type": "event", "sid": sid} | event) + "\n")
                after = (score, sid)
                bar.update(1)


@main.command("prune")
def prune_command() -> None:
    """Apply the retention to every index now (writes also do it as they go)."""
    ops = _ops()
    now = now_ms()
    removed = ops.store.prune(now) + ops.recordings.prune(now, STATES) + ops.alerts.prune(now)
    click.echo(f"removed {removed} index entries older than the retention")


@main.command("worker")
def worker_command() -> None:
    """Run one RQ worker with the scheduler (python -m workers)."""
    os.execv(sys.executable, [sys.executable, "-m", "workers"])  # noqa: S606  # our own module


@main.command("serve")
def serve_command() -> None:
    """Run the web app under gunicorn with the service's gunicorn settings.

    From the installed package alone (an image or a pip install has no checkout): the
    settings module and the app factory, not deploy/ and wsgi.py."""
    os.execv(  # noqa: S606  # our own entry point
        sys.executable,
        [sys.executable, "-m", "gunicorn", "-c", "python:webhook.gunicorn_config",
         "webhook.app:create_app()"],
    )  # fmt: skip
