"""gunicorn's settings and hooks, from the environment.

In the package, so an installed service has them too (`agora-webhook serve`: gunicorn -c
python:webhook.gunicorn_config); deploy/gunicorn.conf.py, which make run, systemd, the
image and the Procfile name, takes them from here.
"""

import errno
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

from gunicorn.glogging import Logger

from webhook.config import Settings, integer_setting
from webhook.errors import ConfigError
from webhook.logconfig import access_log_target, logging_config

env = os.environ


def _refuse(err: ConfigError) -> NoReturn:
    """A configuration error: one line and exit status 2, as the worker does (systemd's
    RestartPreventExitStatus=2 then stops retrying), not gunicorn's traceback."""
    print(f"configuration error: {err.message}", file=sys.stderr)  # noqa: T201  # before logging exists
    raise SystemExit(2)  # gunicorn prints a traceback for any other exception


def _whole(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    try:
        return integer_setting(env, name, default, minimum=minimum)
    except ConfigError as err:
        _refuse(err)


bind = env.get("GUNICORN_BIND") or f"0.0.0.0:{env.get('PORT') or '8000'}"
workers = _whole(env, "WEB_CONCURRENCY", 2)
# Threads let one process overlap a Redis round trip with the next request and keep
# connections alive, as Agora recommends (KeepAliveTimeout >= 10 s).
worker_class = env.get("GUNICORN_WORKER_CLASS", "gthread")
threads = _whole(env, "GUNICORN_THREADS", 4)
keepalive = _whole(env, "GUNICORN_KEEPALIVE", 15, minimum=0)
# Each worker listens on its own SO_REUSEPORT socket and the kernel spreads new connections
# over them. On one shared socket, whichever worker wakes first accepts: with a few
# long-lived keep-alive connections (Agora's, or a load balancer's) one worker often got
# them all while the other idled, at under half the throughput (make bench saw 16 of 16).
reuse_port = env.get("GUNICORN_REUSE_PORT", "1") != "0"
# Agora gives up on an answer after 10 s; a request still running at 30 s is stuck.
timeout = _whole(env, "GUNICORN_TIMEOUT", 30)
graceful_timeout = _whole(env, "GUNICORN_GRACEFUL_TIMEOUT", 20)
# Recycle workers now and then so a slow leak can never take the receiver down.
max_requests = _whole(env, "GUNICORN_MAX_REQUESTS", 0, minimum=0)
max_requests_jitter = max_requests // 10
accesslog = access_log_target(env)
# gunicorn's control socket defaults to one path per user, which several instances on a
# host (web + benchmarks + tests) would fight over; opt in with a path of your own.
control_socket = env.get("GUNICORN_CONTROL_SOCKET", "")
control_socket_disable = not control_socket
# Parsed here too so a bad configuration stops gunicorn before any worker forks.
try:
    _settings = Settings.from_env()
except ConfigError as err:
    _refuse(err)
logconfig_dict = logging_config(
    _settings.log_format, _settings.log_level, access_log=accesslog is not None
)


class AccessLogWhenAsked(Logger):  # type: ignore[misc]  # gunicorn is unannotated
    """gunicorn's logger, without access-log work unless GUNICORN_ACCESS_LOG asks for it.
    With logconfig_dict set (our log format) gunicorn counts the access log as enabled and
    builds every request's log fields for a logger that has no handler: ~6 % of a web
    worker's Python time under load (py-spy, make bench's traffic)."""

    def access(self, resp: object, req: object, environ: object, request_time: object) -> None:
        if accesslog is not None:
            super().access(resp, req, environ, request_time)


logger_class = AccessLogWhenAsked

# Prometheus multiprocess mode: every worker writes its counters to files in one directory
# that /metrics (served by any worker) adds up. Without PROMETHEUS_MULTIPROC_DIR, one of our
# own: made once the start is sure (on_starting, before any worker imports the client) and
# removed on exit, so no start leaves a directory in /tmp behind.
_OWN_METRICS_DIR = not env.get("PROMETHEUS_MULTIPROC_DIR")


def on_starting(server: object) -> None:
    if reuse_port:
        _refuse_a_port_in_use(bind)
    if _OWN_METRICS_DIR:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="agora-metrics-")
        return
    # Counts from a previous run must not be added to this one's.
    for stale in Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).glob("*.db"):
        stale.unlink()


def when_ready(server: object) -> None:
    if reuse_port:
        # gunicorn's own "Listening at:" line is empty then: its master holds no socket.
        server.log.info("Listening at: http://%s (each worker on its own socket)", bind)  # type: ignore[attr-defined]  # a gunicorn Arbiter


def on_exit(server: object) -> None:
    # Not when this master re-executed itself (USR2, which docs/deploy.md says is not
    # supported): left alone rather than removed from under a process that may still use it.
    if _OWN_METRICS_DIR and not getattr(server, "reexec_pid", 0):
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def _refuse_a_port_in_use(address: str) -> None:
    """With reuse_port, a second gunicorn of the same user on a taken port would bind it
    too and silently take half the callbacks, maybe with other settings: fail instead."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or address.startswith(("unix:", "fd://")):
        return  # not a TCP address: SO_REUSEPORT does not apply
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104  # gunicorn's reading of ":8000"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR: connections of a previous run in TIME_WAIT do not count; a socket
        # listening there (SO_REUSEPORT or not) still does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise RuntimeError(f"{address} is already in use") from None
            raise


def child_exit(server: object, worker: object) -> None:
    from prometheus_client import multiprocess  # after the directory is set

    pid: int = worker.pid  # type: ignore[attr-defined]  # a gunicorn Worker
    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]  # unannotated upstream
