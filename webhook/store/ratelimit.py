"""Per-client counting of refused, unverified requests: one Lua call, on the refusal path only.

A request that passes verification never reaches this module, so a client that is limited
(even one of Agora's own addresses, during a secret rotation gone wrong) still gets every
validly signed callback stored, and the good path costs no extra round trip.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from datetime import timedelta
from typing import cast

from redis import RedisCluster
from redis.exceptions import RedisError

from webhook.errors import StoreUnavailableError
from webhook.store import keys
from webhook.store.callbacks import MINUTE_COUNTS_TTL_S
from webhook.store.connections import StoreClient

# Fixed window: the first refusal starts it. Beyond the limit a request is kept only when
# it is the 1st, 2nd, 4th, 8th ... one over the limit (a sample that still shows the flood
# went on); the others are only counted here, in agora:stats and the minute's counters,
# under the same field record_rejected() would use, so every request is counted once.
_COUNT_LUA = """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
local over = count - tonumber(ARGV[1])
local keep = 1
if over > 0 and bit.band(over, over - 1) ~= 0 then
  keep = 0
  redis.call('HINCRBY', KEYS[2], ARGV[4], 1)
  redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
  redis.call('EXPIRE', KEYS[3], ARGV[3])
end
return {count, ttl, keep}
"""

# What a counted request turns into once its client is over the limit.
LIMITED_REASON = "rate_limited"


@dataclass(frozen=True)
class Verdict:
    """What the limiter says about one refused request."""

    # Refusals counted for this client in the current window, this one included.
    count: int
    limited: bool
    # Keep the request in the rejected store: always below the limit, a sample above it.
    keep: bool
    # Seconds until the window ends (at least 1).
    retry_after_s: int


def client_of(remote_addr: str | None) -> str:
    """The unit we count: an IPv4 address, or the /64 of an IPv6 one (a single host often
    holds a whole /64, and would otherwise get a fresh counter per address)."""
    if not remote_addr:
        return "unknown"
    try:
        address = ipaddress.ip_address(remote_addr)
    except ValueError:
        # ProxyFix passes on whatever the proxy wrote; bound what goes into a key.
        return remote_addr[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class RefusalLimiter:
    """Counts refused, unverified requests per client in a fixed window."""

    def __init__(self, redis: StoreClient, *, limit: int, window: timedelta) -> None:
        self.limit = limit
        self.window = window
        self.clustered = isinstance(redis, RedisCluster)
        self._count = redis.register_script(_COUNT_LUA)

    def hit(self, remote_addr: str | None, *, received_ms: int) -> Verdict:
        """Count one refused request from remote_addr.

        Raises:
            StoreUnavailableError: Redis did not answer (the caller decides to fail open).
        """
        window_ms = max(1, int(self.window.total_seconds() * 1000))
        client = client_of(remote_addr)
        # On Redis Cluster the three keys share the client's shard (one slot, one script).
        shard = keys.shard_of(client) if self.clustered else None
        key_list = (
            keys.refusals_by_client(client, shard),
            keys.stats(shard),
            keys.outcomes_in_minute(received_ms // 60_000, shard),
        )
        args = (self.limit, window_ms, MINUTE_COUNTS_TTL_S, f"rejected:{LIMITED_REASON}")
        try:
            count, ttl_ms, keep = cast(list[int], self._count(keys=key_list, args=args))
        except RedisError as err:
            raise StoreUnavailableError("the event store is unreachable; retry later") from err
        return Verdict(
            count=count,
            limited=count > self.limit,
            keep=bool(keep),
            retry_after_s=max(1, math.ceil(ttl_ms / 1000)),
        )
