"""AlertStore: one alert per (session, kind), open -> acknowledged -> resolved."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, cast

import orjson
from redis import Redis
from redis.client import Pipeline

from webhook.alerts import (
    KINDS,
    SEVERITY_RANK,
    Alert,
    AlertState,
    Severity,
    Transition,
    alert_id,
)
from webhook.store import keys

STATES: tuple[AlertState, ...] = ("open", "acknowledged", "resolved")
# Remove the announced transitions from the front of the pending ones: a transition
# written meanwhile stays to be announced.
_CLEAR_ANNOUNCED_LUA = """
local held = redis.call('HGET', KEYS[1], 'unannounced') or ''
if held == ARGV[1] then
  redis.call('HSET', KEYS[1], 'unannounced', '')
elseif string.sub(held, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then
  redis.call('HSET', KEYS[1], 'unannounced', string.sub(held, #ARGV[1] + 2))
end
"""
MAX_DELIVERIES_KEPT = 10_000


class AlertStore:
    """Alerts in Redis; raise() and resolve() say which transition, if any, happened."""

    def __init__(self, redis: Redis, *, retention: timedelta = timedelta(days=30)) -> None:
        self.redis = redis
        # An alert is kept as long as the session it is about, counted from its last change.
        self.retention = retention
        self._clear_announced = redis.register_script(_CLEAR_ANNOUNCED_LUA)

    def raise_alert(
        self,
        *,
        sid: str,
        cname: str | None,
        kind: str,
        message: str,
        evidence: Mapping[str, Any],
        now_ms: int,
        severity: Severity | None = None,
    ) -> tuple[Alert, Transition | None]:
        """Open the alert, or refresh its evidence if it is already open or acknowledged.

        Returns the alert and "raised" when it was not active before (new or resolved), or
        when this raise is more severe than the active alert: an escalation is raised anew,
        so the sinks hear of it and an acknowledge of the milder problem does not cover it.
        A milder raise of an active alert changes nothing but its updated time, so the
        alert comes out the same whichever order the two arrive in."""
        identifier = alert_id(sid, kind)
        key = keys.alert(identifier)
        raised_severity = severity or KINDS.get(kind, "warning")

        def write(pipe: Pipeline) -> Transition | None:
            # WATCHed: an operator's acknowledge between this read and the write (the web
            # side holds no session lock) makes the transaction re-read, not misfile it.
            found = cast(dict[bytes, bytes], pipe.hgetall(key))
            current = _alert(found) if found else None
            active = current if current is not None and current.state != "resolved" else None
            change = 0 if active is None else (
                SEVERITY_RANK[raised_severity] - SEVERITY_RANK[active.severity]
            )  # fmt: skip
            fields: dict[Any, Any] = {"updated_ms": now_ms}  # redis-py types it narrowly
            if change >= 0:
                fields |= {"message": message, "evidence": orjson.dumps(evidence)}
            transition: Transition | None = None
            if active is None or change > 0:
                transition = "raised"
                fields |= {
                    "id": identifier,
                    "sid": sid,
                    "cname": cname or "",
                    "kind": kind,
                    "severity": raised_severity,
                    "state": "open",
                    "raised_ms": now_ms,
                    "acknowledged_ms": "",
                    "resolved_ms": "",
                    "resolution": "",
                    # Transitions whose deliveries are not queued yet, in order: a worker
                    # killed in between leaves them, and the next reconciliation announces
                    # them, before it raises anything (workers.notify.announce_pending).
                    "unannounced": "raised",
                }
            pipe.multi()
            pipe.hset(key, mapping=fields)
            if transition:
                pipe.sadd(keys.session_alerts(sid), kind)
                self._index(pipe, sid, identifier, "open", now_ms)
            else:
                assert current is not None  # noqa: S101  # narrowed by the branch above
                pipe.zadd(keys.alerts_by_state(current.state), {identifier: now_ms})
                self._keep(pipe, sid, identifier)
            return transition

        transition = cast(
            Transition | None,
            self.redis.transaction(write, key, value_from_callable=True),  # type: ignore[arg-type]  # redis-py types it as returning None even with value_from_callable
        )
        alert = self.get(identifier)
        assert alert is not None  # noqa: S101  # just written in one transaction
        return alert, transition

    def resolve(
        self, sid: str, kind: str, *, now_ms: int, note: str
    ) -> tuple[Alert, Transition] | None:
        """Resolve the alert if it is active; None when there was nothing to resolve."""
        identifier = alert_id(sid, kind)
        current = self.get(identifier)
        if current is None or current.state == "resolved":
            return None
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(
            keys.alert(identifier),
            mapping={"state": "resolved", "resolved_ms": now_ms, "updated_ms": now_ms,
                     "resolution": note,
                     "unannounced": " ".join((*current.unannounced, "resolved"))},
        )  # fmt: skip
        self._index(pipe, sid, identifier, "resolved", now_ms)
        pipe.execute()
        alert = self.get(identifier)
        assert alert is not None  # noqa: S101  # just written
        return alert, "resolved"

    def mark_announced(self, identifier: str, transitions: tuple[Transition, ...]) -> None:
        """The deliveries of these pending transitions are queued (not of any written
        meanwhile)."""
        self._clear_announced(keys=(keys.alert(identifier),), args=(" ".join(transitions),))

    def acknowledge(self, identifier: str, *, now_ms: int) -> Alert | None:
        """An operator has seen it; still active until its condition clears."""
        key = keys.alert(identifier)

        def write(pipe: Pipeline) -> None:
            # WATCHed: a worker resolving it between this read and the write makes the
            # transaction re-read and leave it resolved (the web side holds no session
            # lock); acknowledging it anyway brought a resolved alert back.
            found = cast(dict[bytes, bytes], pipe.hgetall(key))
            current = _alert(found) if found else None
            if current is None or current.state != "open":
                return
            pipe.multi()
            pipe.hset(
                key, mapping={"state": "acknowledged", "acknowledged_ms": now_ms,
                              "updated_ms": now_ms},
            )  # fmt: skip
            self._index(pipe, current.sid, identifier, "acknowledged", now_ms)

        self.redis.transaction(write, key)
        return self.get(identifier)

    def _index(
        self, pipe: Pipeline, sid: str, identifier: str, state: AlertState, now_ms: int
    ) -> None:
        oldest = now_ms - int(self.retention.total_seconds() * 1000)
        for other in STATES:
            if other != state:
                pipe.zrem(keys.alerts_by_state(other), identifier)
            # Alert hashes expire; their index entries go with the same age.
            pipe.zremrangebyscore(keys.alerts_by_state(other), "-inf", f"({oldest}")
        pipe.zadd(keys.alerts_by_state(state), {identifier: now_ms})
        self._keep(pipe, sid, identifier)

    def _keep(self, pipe: Pipeline, sid: str, identifier: str) -> None:
        """Every write of an alert keeps it, and its session's set of kinds, for the
        retention: a set that expired first hid an open alert from the session's pages."""
        pipe.expire(keys.alert(identifier), self.retention)
        pipe.expire(keys.session_alerts(sid), self.retention)

    def prune(self, now_ms: int) -> int:
        """Apply the retention to the state indexes now (alerts themselves expire)."""
        oldest = now_ms - int(self.retention.total_seconds() * 1000)
        pipe = self.redis.pipeline(transaction=False)
        for state in STATES:
            pipe.zremrangebyscore(keys.alerts_by_state(state), "-inf", f"({oldest}")
        return sum(int(n) for n in pipe.execute())

    def get(self, identifier: str) -> Alert | None:
        data = cast(dict[bytes, bytes], self.redis.hgetall(keys.alert(identifier)))
        return _alert(data) if data else None

    def for_session(self, sid: str) -> list[Alert]:
        kinds = cast(set[bytes], self.redis.smembers(keys.session_alerts(sid)))
        return self._many([alert_id(sid, kind.decode()) for kind in sorted(kinds)])

    def count_by_state(self) -> dict[AlertState, int]:
        """How many alerts are in each state, exactly (one ZCARD each)."""
        pipe = self.redis.pipeline(transaction=False)
        for state in STATES:
            pipe.zcard(keys.alerts_by_state(state))
        return dict(zip(STATES, (int(n) for n in pipe.execute()), strict=True))

    def in_state(self, state: AlertState, limit: int = 100) -> list[Alert]:
        ids = cast(list[bytes], self.redis.zrevrange(keys.alerts_by_state(state), 0, limit - 1))
        return self._many([i.decode() for i in ids])

    def _many(self, identifiers: list[str]) -> list[Alert]:
        """The alerts that still exist, in the given order, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for identifier in identifiers:
            pipe.hgetall(keys.alert(identifier))
        rows = cast(list[dict[bytes, bytes]], pipe.execute()) if identifiers else []
        return [_alert(data) for data in rows if data]

    def record_delivery(
        self, identifier: str, sink: str, transition: Transition, *, ok: bool, detail: str,
        now_ms: int,
    ) -> None:  # fmt: skip
        """Keep every delivery attempt, so failed deliveries are visible."""
        self.redis.xadd(
            keys.alert_deliveries(),
            {"alert_id": identifier, "sink": sink, "transition": transition,
             "ok": int(ok), "detail": detail, "at_ms": now_ms},
            maxlen=MAX_DELIVERIES_KEPT,
            approximate=True,
        )  # fmt: skip

    def deliveries(self, count: int = 100) -> list[dict[str, Any]]:
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]],
            self.redis.xrevrange(keys.alert_deliveries(), count=count),
        )
        return [
            {k.decode(): v.decode() for k, v in fields.items()} | {"id": entry_id.decode()}
            for entry_id, fields in entries
        ]


def _optional_int(value: bytes | None) -> int | None:
    return int(value) if value not in (None, b"") else None


def _alert(data: Mapping[bytes, bytes]) -> Alert:
    return Alert(
        id=data[b"id"].decode(),
        sid=data[b"sid"].decode(),
        cname=data[b"cname"].decode() or None,
        kind=data[b"kind"].decode(),
        severity=data[b"severity"].decode(),  # type: ignore[arg-type]  # written from KINDS
        message=data[b"message"].decode(),
        state=data[b"state"].decode(),  # type: ignore[arg-type]  # written from STATES
        raised_ms=int(data[b"raised_ms"]),
        updated_ms=int(data[b"updated_ms"]),
        evidence=orjson.loads(data[b"evidence"]),
        acknowledged_ms=_optional_int(data.get(b"acknowledged_ms")),
        resolved_ms=_optional_int(data.get(b"resolved_ms")),
        unannounced=cast(
            tuple[Transition, ...], tuple(data.get(b"unannounced", b"").decode().split())
        ),
    )
