"""Redis clients: one primary by URL, or the primary that Redis Sentinel names.

With Sentinel, every new connection asks the sentinels where the primary is, so after a
failover the next attempt (Agora's retry of a 503, RQ's reconnect) lands on the new one.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from redis import Redis, RedisCluster
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.exceptions import BusyLoadingError, RedisError, ResponseError
from redis.retry import Retry
from redis.sentinel import Sentinel

from webhook.store import keys

Address = tuple[str, int]
# The event store runs on either; both speak the commands it uses.
StoreClient = Redis | RedisCluster
READINESS_PROBE_TTL_MS = 10_000


def connect(
    url: str,
    *,
    timeout: timedelta | None,
    sentinels: tuple[Address, ...] = (),
    sentinel_master: str = "",
) -> Redis:
    """A client for the primary. `timeout` bounds every socket operation (the web side
    must answer Agora within 10 s); None for RQ workers and other blocking readers: redis-py's
    default socket timeout then (5 s), which RQ raises for its own blocking pops, and every
    other blocking read here waits less than that (the relay 2 s, tail 2 s).

    With sentinels, `url` still gives the database, user and password of the primary; its
    host and port are ignored."""
    options: dict[str, Any] = {}
    if timeout is None:
        # Workers block on the queue for long: a PING now and then finds a dead peer.
        options["health_check_interval"] = 30
    else:
        seconds = timeout.total_seconds()
        # One quick retry covers a pooled connection Redis closed (a restart, a failover);
        # more would push a 503 past our two-second budget. No health-check PING: after
        # 30 s idle it came before the command, each attempt then cost two timeouts, and
        # a stalled Redis got its 503 in 4 x 0.6 s, past the budget (a QA run: 2.4 s). The
        # retry already replaces a connection that turns out dead.
        options |= {"socket_timeout": seconds, "socket_connect_timeout": seconds,
                    "retry": Retry(NoBackoff(), 1)}  # fmt: skip
    if not sentinels:
        return Redis.from_url(url, **options)
    parsed = parse_url(url)  # type: ignore[no-untyped-call]  # unannotated upstream
    credentials = {k: parsed[k] for k in ("db", "username", "password") if k in parsed}
    sentinel_timeouts = {k: options[k] for k in ("socket_timeout", "socket_connect_timeout")
                         if k in options}  # fmt: skip
    sentinel = Sentinel(list(sentinels), sentinel_kwargs=sentinel_timeouts)  # type: ignore[no-untyped-call]  # unannotated upstream
    client: Redis = sentinel.master_for(sentinel_master, **options, **credentials)  # type: ignore[no-untyped-call]  # unannotated upstream
    return client


def connect_cluster(url: str, *, timeout: timedelta | None) -> RedisCluster:
    """A Redis Cluster client for the event store, from any node's URL; it learns the
    slot map from that node and follows MOVED/ASK redirections."""
    options: dict[str, Any] = {}
    if timeout is not None:
        seconds = timeout.total_seconds()
        options |= {"socket_timeout": seconds, "socket_connect_timeout": seconds}
    return RedisCluster.from_url(url, **options)


def write_readiness(client: StoreClient) -> str:
    """Whether Redis takes a write now: "ok", "unreachable", "loading", or "refusing writes
    (<Redis's error code>)". A PING is not enough: a replica (READONLY), a primary out of
    memory under noeviction (OOM) or one whose last snapshot failed (MISCONF) answer it
    and refuse every callback. One SET of a key that expires."""
    try:
        client.set(keys.readiness_probe(), "1", px=READINESS_PROBE_TTL_MS)
    except BusyLoadingError:
        return "loading"
    except ResponseError as err:
        # Redis's own error code (READONLY, OOM, MISCONF, ...): never a secret.
        # redis-py keeps it apart from the message for the codes it knows (OOM, READONLY).
        code = getattr(err, "status_code", None) or str(err).split(" ", 1)[0]
        return f"refusing writes ({code})"
    except RedisError:
        return "unreachable"
    return "ok"
