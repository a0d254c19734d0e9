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


def is_listening(url: str) -> bool:
    """The URL answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
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
    """TCP sockets listening on this port (Linux /proc/net/tcp; state 0A is LISTEN)."""
    try:
        table = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:  # not Linux: one connectable socket is all we can tell
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return 1 << 30
        return 0
    wanted = f":{port:04X}"
    return sum(1 for row in table if row.split()[1].endswith(wanted) and row.split()[3] == "0A")


def connections_by_process(port: int, pids: Sequence[int]) -> dict[int, int]:
    """How many established TCP connections to this local port each process holds (Linux)."""
    inodes = set()
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        columns = row.split()
        if columns[1].endswith(f":{port:04X}") and columns[3] == "01":  # 01: ESTABLISHED
            inodes.add(f"socket:[{columns[9]}]")
    held = {}
    for pid in pids:
        count = 0
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                count += os.readlink(fd) in inodes
        held[pid] = count
    return held
