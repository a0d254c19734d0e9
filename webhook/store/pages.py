"""Cursor pagination over the sorted-set indexes (newest first), shared by the stores."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import cast

from redis import Redis, RedisCluster


def newest_first(
    redis: Redis | RedisCluster,
    key: str | Sequence[str],
    *,
    since_ms: int | None,
    after: tuple[int, str] | None,
    limit: int,
) -> list[tuple[str, int]]:
    """A page of a sorted set (or of several, merged: the shards of one index on Redis
    Cluster), newest first, after a (score, member) cursor. Members with the cursor's score
    come in descending order, so those >= its member were on the last page; twice the page
    is read from each set so a run of equal scores does not end the listing."""
    index = [key] if isinstance(key, str) else list(key)
    pipe = redis.pipeline(transaction=False)
    for name in index:
        pipe.zrevrangebyscore(
            name,
            after[0] if after else "+inf",
            since_ms if since_ms is not None else "-inf",
            start=0,
            num=2 * limit,
            withscores=True,
        )
    found = cast(list[list[tuple[bytes, float]]], pipe.execute())
    rows = heapq.merge(*found, key=lambda row: (row[1], row[0]), reverse=True)
    page = []
    for member, score in rows:
        sid = member.decode()
        if after and int(score) == after[0] and sid >= after[1]:
            continue
        page.append((sid, int(score)))
        if len(page) == limit:
            break
    return page
