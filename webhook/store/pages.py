"""Cursor pagination over the sorted-set indexes (newest first), shared by the stores."""

from __future__ import annotations

from typing import cast

from redis import Redis


def newest_first(
    redis: Redis, key: str, *, since_ms: int | None, after: tuple[int, str] | None, limit: int
) -> list[tuple[str, int]]:
    """A page of a sorted set, newest first, after a (score, member) cursor. Members with
    the cursor's score come in descending order, so those >= its member were on the last
    page; twice the page is read so a run of equal scores does not end the listing."""
    rows = cast(
        list[tuple[bytes, float]],
        redis.zrevrangebyscore(
            key,
            after[0] if after else "+inf",
            since_ms if since_ms is not None else "-inf",
            start=0,
            num=2 * limit,
            withscores=True,
        ),
    )
    page = []
    for member, score in rows:
        sid = member.decode()
        if after and int(score) == after[0] and sid >= after[1]:
            continue
        page.append((sid, int(score)))
        if len(page) == limit:
            break
    return page
