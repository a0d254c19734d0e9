"""The real processes that the benchmarks and system tests start: waiting for them,
stopping them, and what Linux's /proc says about them (CPU time, children, sockets)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll condition every 0.1 s. Raises AssertionError (a test's failure) after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def is_listening(url: str, timeout: float = 1) -> bool:
    """The URL answers 200 within the timeout."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    """Signal the process and return its exit code; kill it (and fail) after 30 s."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"{process.args!r} did not stop on signal {sig}") from None


def cpu_seconds(pids: Sequence[int]) -> float:
    """User plus system CPU time of these processes so far (Linux /proc; 0 elsewhere)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (after pid, comm)
    return total / os.sysconf("SC_CLK_TCK") if total else 0.0


def process_tree(pid: int) -> list[int]:
    """pid and its children (gunicorn's master and its workers)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            children.append(int(stat.parent.name))
    return [pid, *children]


def listening_sockets(port: int) -> int:
    """TCP sockets listening on this port (Linux /proc/net/tcp)."""
    try:
        return sum(1 for state, _ in _tcp_sockets(port) if state == _LISTEN)
    except OSError:  # not Linux: one connectable socket is all we can tell
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return 1 << 30
        return 0


def connections_by_process(port: int, pids: Sequence[int]) -> dict[int, int]:
    """How many established TCP connections to this local port each process holds (Linux)."""
    inodes = {f"socket:[{inode}]" for state, inode in _tcp_sockets(port) if state == _ESTABLISHED}
    held = {}
    for pid in pids:
        count = 0
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                count += os.readlink(fd) in inodes
        held[pid] = count
    return held


_ESTABLISHED, _LISTEN = "01", "0A"  # /proc/net/tcp's st column


def _tcp_sockets(port: int) -> list[tuple[str, str]]:
    """(state, inode) of each IPv4 TCP socket on this local port, from /proc/net/tcp."""
    found = []
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        columns = row.split()
        if columns[1].endswith(f":{port:04X}"):
            found.append((columns[3], columns[9]))
    return found
