"""gunicorn settings, from the environment. `gunicorn -c deploy/gunicorn.conf.py wsgi:app`."""

import errno
import os
import socket
import tempfile
from pathlib import Path

from webhook.config import Settings
from webhook.logconfig import logging_config

bind = os.environ.get("GUNICORN_BIND") or f"0.0.0.0:{os.environ.get('PORT') or '8000'}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Threads let one process overlap a Redis round trip with the next request and keep
# connections alive, as Agora recommends (KeepAliveTimeout >= 10 s).
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "15"))
# Each worker listens on its own SO_REUSEPORT socket and the kernel spreads new connections
# over them. On one shared socket, whichever worker wakes first accepts: with a few
# long-lived keep-alive connections (Agora's, or a load balancer's) one worker often got
# them all while the other idled, at under half the throughput (make bench saw 16 of 16).
reuse_port = os.environ.get("GUNICORN_REUSE_PORT", "1") != "0"
# Agora gives up on an answer after 10 s; a request still running at 30 s is stuck.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20"))
# Recycle workers now and then so a slow leak can never take the receiver down.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))
max_requests_jitter = max_requests // 10
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
# gunicorn's control socket defaults to one path per user, which several instances on a
# host (web + benchmarks + tests) would fight over; opt in with a path of your own.
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET", "")
control_socket_disable = not control_socket
# Parsed here too so a bad configuration stops gunicorn before any worker forks.
_settings = Settings.from_env()
logconfig_dict = logging_config(
    _settings.log_format, _settings.log_level, access_log=accesslog is not None
)

# Prometheus multiprocess mode: every worker writes its counters to files in one directory
# that /metrics (served by any worker) adds up. Set before any worker imports the client.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="agora-metrics-")


def on_starting(server: object) -> None:
    if reuse_port:
        _refuse_a_port_in_use(bind)
    # Counts from a previous run must not be added to this one's.
    for stale in Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).glob("*.db"):
        stale.unlink()


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

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]  # a gunicorn Worker
