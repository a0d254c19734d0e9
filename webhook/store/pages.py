"""Cursor pagination over the sorted-set indexes (newest first), shared by the stores."""

from __future__ import annotations

import heapq
import itertools
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
    come in descending order, so those >= its member were on the last page. Twice the page
    is read from each set in one round trip; a set whose rows were all on earlier pages (a
    run of equal scores longer than that) is read on until it gives a page or ends."""
    index = [key] if isinstance(key, str) else list(key)
    high = after[0] if after else "+inf"
    low = since_ms if since_ms is not None else "-inf"
    batch = 2 * limit
    pipe = redis.pipeline(transaction=False)
    for name in index:
        pipe.zrevrangebyscore(name, high, low, start=0, num=batch, withscores=True)
    found = cast(list[list[tuple[bytes, float]]], pipe.execute())
    pages = []
    for name, rows in zip(index, found, strict=True):
        page, read = _after(rows, after), len(rows)
        while len(page) < limit and len(rows) == batch:
            rows = cast(
                list[tuple[bytes, float]],
                redis.zrevrangebyscore(name, high, low, start=read, num=batch, withscores=True),
            )
            page += _after(rows, after)
            read += len(rows)
        pages.append(page)
    merged = heapq.merge(*pages, key=lambda row: (row[1], row[0]), reverse=True)
    return list(itertools.islice(merged, limit))


def _after(rows: list[tuple[bytes, float]], after: tuple[int, str] | None) -> list[tuple[str, int]]:
    """The rows past the cursor, as (sid, score)."""
    page = []
    for member, score in rows:
        sid = member.decode()
        if after and int(score) == after[0] and sid >= after[1]:
            continue
        page.append((sid, int(score)))
    return page
