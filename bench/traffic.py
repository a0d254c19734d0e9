"""Realistic, unique, signed callback traffic built from the documented example bodies."""

from __future__ import annotations

import collections
import copy
import json
import random
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webhook.signature import HEADER_V1, HEADER_V2, sign

EXAMPLES = Path(__file__).resolve().parent.parent / "tests" / "data" / "callbacks"


def _template(prefix: str) -> dict[str, Any]:
    (path,) = EXAMPLES.glob(f"{prefix}*.json")
    body: dict[str, Any] = json.loads(path.read_text())
    return body


@dataclass(frozen=True)
class PreparedRequest:
    notice_id: str
    sid: str
    body_size: int
    wire: bytes  # the whole HTTP/1.1 request, ready to write


def session_events(rng: random.Random, progress_ticks: int) -> list[str]:
    """The event prefixes of one individual-mode recording, in Agora's usual order; an
    hour-long recording has 60 progress ticks."""
    events = ["40_", "30_", "44_", "43_", "42_", "04_", "43_", "44_"]
    events += ["33_"] * progress_ticks
    events += ["41_", "32_" if rng.random() < 0.05 else "31_", "11_"]
    return events


def build_sessions(
    count: int, *, seed: int = 7, progress_ticks: int = 60
) -> list[list[dict[str, Any]]]:
    """count sessions, each a list of callback bodies with unique noticeIds."""
    rng = random.Random(seed)
    templates: dict[str, dict[str, Any]] = {}
    sessions = []
    for n in range(count):
        sid = secrets.token_hex(16)
        cname = f"room{n % 500}"
        sendts = 1_749_549_600_000 + n * 1000
        bodies = []
        for sequence, prefix in enumerate(session_events(rng, progress_ticks)):
            template = templates.get(prefix) or templates.setdefault(prefix, _template(prefix))
            body = copy.deepcopy(template)
            body["noticeId"] = secrets.token_hex(16)
            body["sid"] = sid
            payload = body["payload"]
            payload.update(sid=sid, cname=cname, sequence=sequence, sendts=sendts)
            if prefix == "33_":
                payload["details"]["progress"] = min(10000, 500 * sequence)
            body["notifyMs"] = sendts + 137
            sendts += 60_000 if prefix == "33_" else 500
            bodies.append(body)
        sessions.append(bodies)
    return sessions


def interleave(
    sessions: list[list[dict[str, Any]]], *, concurrent: int = 300
) -> Iterator[dict[str, Any]]:
    """Recordings running side by side, `concurrent` at a time, as a busy app has them:
    one event from each active recording in turn; a finished one makes room for the next."""
    waiting = collections.deque(sessions)
    active: collections.deque[collections.deque[dict[str, Any]]] = collections.deque()
    while waiting or active:
        while waiting and len(active) < concurrent:
            active.append(collections.deque(waiting.popleft()))
        events = active.popleft()
        yield events.popleft()
        if events:
            active.append(events)


def prepare(body: dict[str, Any], secret: str, host: str) -> PreparedRequest:
    # Stamped now, as Agora does on each delivery: the service refuses signed callbacks
    # older than a day as replays, and a run lasts minutes.
    body["notifyMs"] = int(time.time() * 1000)
    raw = json.dumps(body, separators=(",", ":")).encode()
    head = (
        f"POST /agora/callback HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n"
        f"{HEADER_V2}: {sign(raw, secret)}\r\n{HEADER_V1}: {sign(raw, secret, 'sha1')}\r\n"
        "User-Agent: bench\r\n\r\n"
    ).encode()
    return PreparedRequest(body["noticeId"], body["payload"]["sid"], len(raw), head + raw)


def prepared_traffic(sessions: int, secret: str, host: str) -> list[PreparedRequest]:
    return [prepare(body, secret, host) for body in interleave(build_sessions(sessions))]
