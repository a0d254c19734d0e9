"""A small asyncio HTTP/1.1 load generator with keep-alive, closed and open loop.

Requests are built and signed beforehand, so the generator spends its time on the wire.
Open-loop latency is measured from each request's scheduled send time, so a stalled
server cannot hide its queueing delay (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.traffic import PreparedRequest


@dataclass
class LoadResult:
    duration_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    answers: dict[str, bytes] = field(default_factory=dict)  # noticeId -> response body
    answered_at: dict[str, float] = field(default_factory=dict)  # noticeId -> epoch seconds
    errors: int = 0

    @property
    def completed(self) -> int:
        return len(self.latencies_s)

    @property
    def not_ok(self) -> int:
        """Answers other than 200, and requests that got no answer."""
        return self.completed - self.statuses[200] + self.errors

    @property
    def rate(self) -> float:
        return self.completed / self.duration_s if self.duration_s else 0.0

    def percentile_ms(self, p: float) -> float:
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        index = min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))
        return ordered[index] * 1000


class _Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def exchange(self, wire: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        reader = self.reader
        if reader is None:
            raise ConnectionError("not connected")
        self.writer.write(wire)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length, close = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        body = await reader.readexactly(length) if length else b""
        if close:
            await self.close()
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def _send(conn: _Connection, request: PreparedRequest, result: LoadResult, t0: float) -> None:
    try:
        status, body = await conn.exchange(request.wire)
    except (OSError, asyncio.IncompleteReadError, ValueError):
        result.errors += 1
        await conn.close()
        return
    result.latencies_s.append(time.perf_counter() - t0)
    result.statuses[status] += 1
    if status in (200, 201):
        result.answers[request.notice_id] = body
        result.answered_at[request.notice_id] = time.time()


async def closed_loop(
    host: str, port: int, requests: Sequence[PreparedRequest], *, connections: int,
    duration_s: float,
) -> tuple[LoadResult, int]:  # fmt: skip
    """As fast as the server answers, for duration_s; returns the result and requests used."""
    result = LoadResult()
    cursor = 0
    deadline = time.perf_counter() + duration_s

    async def drive() -> None:
        nonlocal cursor
        conn = _Connection(host, port)
        while time.perf_counter() < deadline and cursor < len(requests):
            request = requests[cursor]
            cursor += 1
            await _send(conn, request, result, time.perf_counter())
        await conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(drive() for _ in range(connections)))
    result.duration_s = time.perf_counter() - start
    return result, cursor


async def open_loop(
    host: str, port: int, requests: Sequence[PreparedRequest], *, rate: float,
    duration_s: float, connections: int,
) -> tuple[LoadResult, int]:  # fmt: skip
    """Requests at a fixed rate; latency counted from each request's scheduled time."""
    result = LoadResult()
    idle: asyncio.Queue[_Connection] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(_Connection(host, port))
    total = min(len(requests), int(rate * duration_s))
    start = time.perf_counter()
    tasks = []

    async def one(request: PreparedRequest, scheduled: float) -> None:
        conn = await idle.get()
        try:
            await _send(conn, request, result, scheduled)
        finally:
            idle.put_nowait(conn)

    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(requests[i], scheduled)))
    await asyncio.gather(*tasks)
    result.duration_s = time.perf_counter() - start
    while not idle.empty():
        await idle.get_nowait().close()
    return result, total
