"""Signed callback delivery with Agora NCS's rules (FACTS.md section 5).

Success is HTTP 200 with a JSON body. Otherwise NCS resends immediately, then at growing
intervals, three retries at most, then drops the notification. notifyMs is refreshed and the
body re-signed on every attempt. The signing is written out here, independently of
webhook.signature, so the simulator can catch a bug in the receiver's own check.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import requests

from simulator.faults import DUPLICATE, REORDER, Faults

logger = logging.getLogger(__name__)

PRODUCT_ID: Final = 3  # Cloud Recording


def new_notice_id() -> str:
    """32 lowercase hex characters, the shape seen in captured callbacks."""
    return uuid.uuid4().hex


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Notice:
    """One notification as NCS sends it, without notifyMs (set on every attempt)."""

    notice_id: str
    event_type: int
    sid: str
    payload: Mapping[str, Any]

    def body(self, notify_ms: int) -> bytes:
        """The exact bytes of one delivery attempt (these are what gets signed)."""
        envelope = {
            "noticeId": self.notice_id,
            "productId": PRODUCT_ID,
            "eventType": self.event_type,
            "notifyMs": notify_ms,
            "sid": self.sid,
            "payload": self.payload,
        }
        return json.dumps(envelope, separators=(",", ":")).encode("utf-8")

    def redundant_copy(self) -> Notice:
        """The copy Agora's "redundant notification" feature sends: same event, new noticeId."""
        return Notice(new_notice_id(), self.event_type, self.sid, self.payload)


def signature_headers(body: bytes, secret: str) -> dict[str, str]:
    """Both NCS signature headers: lowercase hex HMACs of the raw body with the NCS secret."""
    key = secret.encode("utf-8")
    return {
        "Content-Type": "application/json",
        "Agora-Signature": hmac.new(key, body, hashlib.sha1).hexdigest(),
        "Agora-Signature-V2": hmac.new(key, body, hashlib.sha256).hexdigest(),
    }


@dataclass
class DeliveryStats:
    """Per sid: notifications made, POSTs sent, delivered, dropped after retries, suppressed."""

    notices: int = 0
    sent: int = 0
    delivered: int = 0
    dropped: int = 0
    suppressed: int = 0


@dataclass(order=True)
class _Attempt:
    due: float
    order: int
    notice: Notice = field(compare=False)
    number: int = field(compare=False)


class Notifier:
    """Delivers notices to one callback URL from one background thread.

    Attempts wait in a heap ordered by due time, so a failing notification waits out its
    retry interval without holding the others back.
    """

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        time_scale: float,
        retry_intervals_s: Sequence[float],
        timeout_s: float,
        seed: int | None = None,
    ) -> None:
        self.url = url
        self._secret = secret
        self._time_scale = time_scale
        self._retry_intervals_s = tuple(retry_intervals_s)
        self._timeout_s = timeout_s
        self._random = random.Random(seed)  # noqa: S311 -- shuffling callbacks, not crypto
        self._session = requests.Session()
        self._cond = threading.Condition()
        self._heap: list[_Attempt] = []
        self._held: dict[str, list[Notice]] = {}
        self._order = 0
        self._in_flight = 0
        self._closed = False
        self._stats: dict[str, DeliveryStats] = {}
        self._thread = threading.Thread(target=self._run, name="simulator-ncs", daemon=True)
        self._thread.start()

    def publish(self, notice: Notice, faults: Faults) -> None:
        """Queue a notice, applying the channel's drop, duplicate and reorder faults."""
        with self._cond:
            stats = self._stats_for(notice.sid)
            stats.notices += 1
            if faults.is_dropped(notice.event_type):
                stats.suppressed += 1
                return
            copies = [notice]
            if faults.has(DUPLICATE):
                copies += [notice, notice.redundant_copy()]
            if not faults.has(REORDER):
                for copy in copies:
                    self._schedule(copy, number=1, delay_s=0.0)
                return
            held = self._held.setdefault(notice.sid, [])
            held.extend(copies)
            if len(held) >= faults.reorder_window:
                self._release(notice.sid)

    def flush(self, sid: str) -> None:
        """Send what a reorder window still holds for sid (called when its session ends)."""
        with self._cond:
            self._release(sid)

    def stats(self) -> dict[str, dict[str, int]]:
        with self._cond:
            return {sid: asdict(stats) for sid, stats in self._stats.items()}

    def is_idle(self) -> bool:
        with self._cond:
            return self._is_idle()

    def wait_until_idle(self, timeout_s: float) -> bool:
        """True once nothing is queued, held or in flight."""
        with self._cond:
            return self._cond.wait_for(self._is_idle, timeout_s)

    def close(self) -> None:
        """Stop delivering (pending attempts are abandoned) and join the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        self._session.close()

    def _is_idle(self) -> bool:
        return not self._heap and self._in_flight == 0 and not any(self._held.values())

    def _stats_for(self, sid: str) -> DeliveryStats:
        return self._stats.setdefault(sid, DeliveryStats())

    def _release(self, sid: str) -> None:
        held = self._held.pop(sid, [])
        self._random.shuffle(held)
        for notice in held:
            self._schedule(notice, number=1, delay_s=0.0)

    def _schedule(self, notice: Notice, *, number: int, delay_s: float) -> None:
        self._order += 1
        heapq.heappush(
            self._heap, _Attempt(time.monotonic() + delay_s, self._order, notice, number)
        )
        self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                attempt = self._next_due()
                if attempt is None:
                    return
                self._in_flight += 1
            is_delivered = self._post(attempt.notice)
            with self._cond:
                self._in_flight -= 1
                self._account(attempt, is_delivered)
                self._cond.notify_all()

    def _next_due(self) -> _Attempt | None:
        """Wait (holding the condition) for the next due attempt; None once closed."""
        while not self._closed:
            if self._heap and self._heap[0].due <= time.monotonic():
                return heapq.heappop(self._heap)
            timeout = self._heap[0].due - time.monotonic() if self._heap else None
            self._cond.wait(timeout)
        return None

    def _account(self, attempt: _Attempt, is_delivered: bool) -> None:
        stats = self._stats_for(attempt.notice.sid)
        stats.sent += 1
        if is_delivered:
            stats.delivered += 1
        elif attempt.number <= len(self._retry_intervals_s):
            delay_s = self._retry_intervals_s[attempt.number - 1] * self._time_scale
            self._schedule(attempt.notice, number=attempt.number + 1, delay_s=delay_s)
        else:
            stats.dropped += 1
            logger.warning(
                "dropped notice %s (eventType %d) after %d attempts",
                attempt.notice.notice_id,
                attempt.notice.event_type,
                attempt.number,
                extra={"sid": attempt.notice.sid},
            )

    def _post(self, notice: Notice) -> bool:
        body = notice.body(now_ms())
        try:
            response = self._session.post(
                self.url,
                data=body,
                headers=signature_headers(body, self._secret),
                timeout=self._timeout_s,
            )
        except requests.RequestException as exc:
            logger.info("callback %s not delivered: %s", notice.notice_id, type(exc).__name__)
            return False
        with response:
            if response.status_code != 200:
                return False
            try:
                response.json()
            except ValueError:
                return False  # NCS wants a JSON body with the 200
        return True
