"""Real Redis topologies on loopback, from the same redis-server binary the tests use:
a primary with a replica watched by three Sentinels, and a Redis Cluster of three masters."""

from __future__ import annotations

import random
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from webhook.redis_server import RedisServer, free_port, redis_server_binary

MASTER_NAME = "agora-primary"


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except RedisError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


@dataclass
class SentinelTopology:
    """A primary, one replica, three Sentinels (quorum 2), failing over within seconds."""

    base: Path
    primary: RedisServer = field(init=False, repr=False)
    replica: RedisServer = field(init=False, repr=False)
    sentinel_ports: list[int] = field(default_factory=list)
    sentinels: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self) -> SentinelTopology:
        self.primary = RedisServer(data_dir=self.base / "primary").start()
        self.replica = RedisServer(
            data_dir=self.base / "replica",
            extra_args=("--replicaof", "127.0.0.1", str(self.primary.port)),
        ).start()
        wait_until(self._replica_in_sync, 15, "the replica to sync")
        for n in range(3):
            port = free_port()
            folder = self.base / f"sentinel-{n}"
            folder.mkdir(parents=True)
            conf = folder / "sentinel.conf"
            # Sentinel rewrites its own config file, so each one gets a writable copy.
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
                f"logfile {folder / 'sentinel.log'}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
                f"sentinel failover-timeout {MASTER_NAME} 5000\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            self.sentinels.append(subprocess.Popen(
                [redis_server_binary(), str(conf), "--sentinel"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
            self.sentinel_ports.append(port)
        wait_until(self._sentinels_agree, 20, "the sentinels to find each other and the replica")
        return self

    @property
    def addresses(self) -> tuple[tuple[str, int], ...]:
        return tuple(("127.0.0.1", port) for port in self.sentinel_ports)

    def primary_port(self) -> int:
        with Redis(port=self.sentinel_ports[0], socket_timeout=1) as sentinel:
            _, port = sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME",
                                                  MASTER_NAME)  # fmt: skip
        return int(port)

    def failover(self, *, kill: bool) -> None:
        """Move the primary role to the replica: SIGKILL the primary (a crash, detected
        after down-after-milliseconds) or ask the sentinels for a graceful failover."""
        before = self.primary_port()
        if kill:
            self.primary.kill()
        else:
            with Redis(port=self.sentinel_ports[0], socket_timeout=5) as sentinel:
                sentinel.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
        wait_until(lambda: self.primary_port() != before, 30, "the sentinels to fail over")
        promoted = self.primary_port()
        wait_until(lambda: Redis(port=promoted).info("replication")["role"] == "master", 15,
                   "the replica to become the primary")  # fmt: skip

    def stop(self) -> None:
        """Stops whatever was started, even by a start() that failed half-way."""
        for process in self.sentinels:
            process.terminate()
        for process in self.sentinels:
            process.wait(timeout=10)
        for server in (getattr(self, "replica", None), getattr(self, "primary", None)):
            if server is not None:
                server.stop()

    def _replica_in_sync(self) -> bool:
        with Redis(port=self.replica.port, socket_timeout=1) as replica:
            return bool(replica.info("replication").get("master_link_status") == "up")

    def _sentinels_agree(self) -> bool:
        for port in self.sentinel_ports:
            with Redis(port=port, socket_timeout=1) as sentinel:
                master = sentinel.sentinel_master(MASTER_NAME)
                if int(master["num-other-sentinels"]) < 2 or int(master["num-slaves"]) < 1:
                    return False
        return True


def cluster_node_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        port = random.randrange(20_000, 55_000)
        if all(_bindable(p) for p in (port, port + 10_000)):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class ClusterTopology:
    """A Redis Cluster of three masters (no replicas), slots split evenly."""

    base: Path
    nodes: list[RedisServer] = field(default_factory=list)

    def start(self) -> ClusterTopology:
        for n in range(3):
            port = cluster_node_port()
            self.nodes.append(RedisServer(
                data_dir=self.base / f"node-{n}", port=port, appendonly=False,
                extra_args=("--cluster-enabled", "yes",
                            "--cluster-config-file", f"nodes-{port}.conf",
                            "--cluster-node-timeout", "2000"),
            ).start())  # fmt: skip
        step = 16384 // len(self.nodes)
        for n, node in enumerate(self.nodes):
            last = 16383 if n == len(self.nodes) - 1 else (n + 1) * step - 1
            with Redis(port=node.port) as client:
                client.execute_command("CLUSTER", "ADDSLOTS", *range(n * step, last + 1))
        with Redis(port=self.nodes[0].port) as first:
            for node in self.nodes[1:]:
                first.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
        wait_until(self._ready, 30, "the cluster to agree on its slots")
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def _ready(self) -> bool:
        for node in self.nodes:
            with Redis(port=node.port, socket_timeout=1) as client:
                info = client.execute_command("CLUSTER", "INFO").decode()
                if "cluster_state:ok" not in info or "cluster_known_nodes:3" not in info:
                    return False
        return True
