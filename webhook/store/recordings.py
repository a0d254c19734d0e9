"""RecordingStore: what the app did per session, and what reconciliation concluded."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, cast

import orjson
from redis import Redis

from webhook.recordings import RecordingFacts, StartCall, State, StopCall
from webhook.store import keys
from webhook.store.pages import newest_first

# A session's call log is short (start, stop, a few queries); bounded all the same.
MAX_CALLS_PER_SESSION = 1000


def _json(value: Any) -> bytes:
    return orjson.dumps(value)


def _int(value: bytes | None) -> int | None:
    return int(value) if value not in (None, b"") else None


def _text(value: bytes | None) -> str | None:
    return value.decode() if value not in (None, b"") else None


class RecordingStore:
    """Start and stop calls, the call log, lifecycle state and the sweep's schedule."""

    def __init__(self, redis: Redis, *, retention: timedelta = timedelta(days=30)) -> None:
        self.redis = redis
        self.retention = retention

    def record_start(self, sid: str, start: StartCall) -> bool:
        """Remember the app's start; False when it was already known (a repeat)."""
        fields = {
            "resource_id": start.resource_id,
            "cname": start.cname,
            "uid": start.uid,
            "mode": start.mode,
            "start_request": _json(start.client_request),
            "started_ms": start.started_ms,
        }
        summary = {"resourceId": start.resource_id}
        return self._record_once(sid, "resource_id", fields, "start", start.started_ms, summary)

    def record_stop(self, sid: str, stop: StopCall) -> bool:
        """Remember Agora's answer to the app's stop; False when already known.

        An answer that could not say where the files went (206 code 65, uploadingStatus
        unknown: FACTS §6.3 says retry) gives way to the answer to the app's retry, once
        that one does say; any other repeat changes nothing."""
        unsettled = stop.upload_status_unknown
        fields = {
            "stopped_ms": stop.stopped_ms,
            "stop_http_status": stop.http_status,
            "stop_code": "" if stop.code is None else stop.code,
            "stop_uploading_status": stop.uploading_status or "",
            "stop_files": _json(list(stop.file_names)),
            "stop_response": _json(stop.response),
            "stop_unsettled": int(unsettled),
        }
        summary = {"httpStatus": stop.http_status}
        return self._record_once(
            sid, "stopped_ms", fields, "stop", stop.stopped_ms, summary,
            replaces_if=None if unsettled else "stop_unsettled",
        )  # fmt: skip

    def _record_once(
        self,
        sid: str,
        marker: str,
        fields: Mapping[str, Any],
        endpoint: str,
        at_ms: int,
        summary: Mapping[str, Any],
        replaces_if: str | None = None,
    ) -> bool:
        """Write an app call's fields unless `marker` is already there; False for a repeat.
        With replaces_if, a call already there is replaced when that field of it is 1.

        WATCHed: the check and the write are one transaction, so a failed write leaves
        nothing behind and a retry records the call."""
        key = keys.recording(sid)

        def write(pipe: Any) -> bool:
            if pipe.hexists(key, marker) and not (
                replaces_if is not None and pipe.hget(key, replaces_if) == b"1"
            ):
                return False
            pipe.multi()
            pipe.hset(key, mapping=dict(fields))
            pipe.expire(key, self.retention)
            pipe.zadd(keys.active_recordings(), {sid: at_ms}, nx=True)
            self._log_call(pipe, sid, endpoint, at_ms, summary)
            return True

        written = self.redis.transaction(
            write,  # type: ignore[arg-type]  # redis-py types it as returning None even with value_from_callable
            key,
            value_from_callable=True,
        )
        return bool(written)

    def record_call(self, sid: str, endpoint: str, at_ms: int, summary: Mapping[str, Any]) -> None:
        """Append one app call (request summary without secrets) to the session's call log."""
        pipe = self.redis.pipeline(transaction=True)
        self._log_call(pipe, sid, endpoint, at_ms, summary)
        pipe.execute()

    def _log_call(
        self, pipe: Any, sid: str, endpoint: str, at_ms: int, summary: Mapping[str, Any]
    ) -> None:
        pipe.xadd(
            keys.calls(sid),
            {"endpoint": endpoint, "at_ms": at_ms, "summary": _json(summary)},
            maxlen=MAX_CALLS_PER_SESSION,
            approximate=True,
        )
        pipe.expire(keys.calls(sid), self.retention)

    def calls(self, sid: str) -> list[dict[str, Any]]:
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], self.redis.xrange(keys.calls(sid)))
        return [
            {
                "endpoint": fields[b"endpoint"].decode(),
                "at_ms": int(fields[b"at_ms"]),
                "summary": orjson.loads(fields[b"summary"]),
            }
            for _, fields in entries
        ]

    def facts(self, sid: str) -> RecordingFacts:
        """What we know about the session besides its callbacks (empty facts if nothing)."""
        data = cast(dict[bytes, bytes], self.redis.hgetall(keys.recording(sid)))
        start = stop = None
        if b"started_ms" in data:
            start = StartCall(
                resource_id=data[b"resource_id"].decode(),
                cname=data[b"cname"].decode(),
                uid=data[b"uid"].decode(),
                mode=data[b"mode"].decode(),  # type: ignore[arg-type]  # validated on the way in
                client_request=orjson.loads(data[b"start_request"]),
                started_ms=int(data[b"started_ms"]),
            )
        if b"stop_http_status" in data:
            stop = StopCall(
                http_status=int(data[b"stop_http_status"]),
                code=_int(data.get(b"stop_code")),
                uploading_status=_text(data.get(b"stop_uploading_status")),  # type: ignore[arg-type]  # validated on the way in
                file_names=tuple(orjson.loads(data[b"stop_files"])),
                response=orjson.loads(data[b"stop_response"]),
                stopped_ms=int(data[b"stopped_ms"]),
            )
        verification = data.get(b"verification")
        return RecordingFacts(
            sid=sid,
            start=start,
            stop=stop,
            state=cast(State, _text(data.get(b"state")) or "unknown"),
            state_ms=_int(data.get(b"state_ms")),
            backuped_ms=_int(data.get(b"backuped_ms")),
            verified_ms=_int(data.get(b"verified_ms")),
            verification=orjson.loads(verification) if verification else {},
            storage_checks=_int(data.get(b"storage_checks")) or 0,
            last_query_ms=_int(data.get(b"last_query_ms")),
            last_query_http_status=_int(data.get(b"last_query_http_status")),
            failover_ms=_int(data.get(b"failover_ms")),
            task_gone_ms=_int(data.get(b"task_gone_ms")),
        )

    def set_state(self, sid: str, state: State, now_ms: int) -> bool:
        """Record the lifecycle state; True when it changed."""
        key = keys.recording(sid)
        previous = cast(bytes | None, self.redis.hget(key, "state"))
        if previous == state.encode():
            return False
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping={"state": state, "state_ms": now_ms})
        pipe.expire(key, self.retention)
        # The per-state index lets dashboards filter by state without scanning sessions.
        if previous:
            pipe.zrem(keys.recordings_by_state(previous.decode()), sid)
        pipe.zadd(keys.recordings_by_state(state), {sid: now_ms})
        oldest = now_ms - int(self.retention.total_seconds() * 1000)
        pipe.zremrangebyscore(keys.recordings_by_state(state), "-inf", f"({oldest}")
        pipe.execute()
        return True

    def mark_backuped(self, sid: str, at_ms: int) -> int:
        """When we first learned the upload went to Agora's backup: the earliest time wins,
        whichever of the callback's job and a reconcile records it first (callers hold the
        session lock). A backuped that arrives after the session's files were verified is a
        new one (the recorder that took over after a failover, with files of its own): the
        check starts again from it, so its files are looked for too."""
        key = keys.recording(sid)
        raw_current, raw_verified = cast(
            list[bytes | None], self.redis.hmget(key, ["backuped_ms", "verified_ms"])
        )
        current, verified = _int(raw_current), _int(raw_verified)
        pipe = self.redis.pipeline(transaction=True)
        if verified is not None and at_ms > verified:
            pipe.hdel(key, "verified_ms")
            pipe.hset(key, "backuped_ms", at_ms)
            current = at_ms
        elif current is None or at_ms < current:
            pipe.hset(key, "backuped_ms", at_ms)
            current = at_ms
        pipe.expire(key, self.retention)
        pipe.execute()
        return current

    def in_state(
        self, state: str, *, after: tuple[int, str] | None = None, limit: int = 50
    ) -> list[tuple[str, int]]:
        """(sid, ms it entered the state), newest first, from the per-state index."""
        return newest_first(
            self.redis, keys.recordings_by_state(state), since_ms=None, after=after, limit=limit
        )

    def prune(self, now_ms: int, states: tuple[str, ...]) -> int:
        """Apply the retention to the per-state indexes now. Returns entries removed."""
        oldest = now_ms - int(self.retention.total_seconds() * 1000)
        pipe = self.redis.pipeline(transaction=False)
        for state in states:
            pipe.zremrangebyscore(keys.recordings_by_state(state), "-inf", f"({oldest}")
        return sum(int(n) for n in pipe.execute())

    def record_query(self, sid: str, *, at_ms: int, http_status: int, task_gone: bool) -> None:
        """The outcome of our last `query` to Agora for the session; task_gone: it answered
        that Agora no longer runs the task (kept from the first such answer in a row)."""
        key = keys.recording(sid)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping={"last_query_ms": at_ms, "last_query_http_status": http_status})
        if task_gone:
            pipe.hsetnx(key, "task_gone_ms", at_ms)
        elif http_status == 200:
            pipe.hdel(key, "task_gone_ms")
        pipe.expire(key, self.retention)
        pipe.execute()

    def mark_failover(self, sid: str, at_ms: int) -> None:
        """When the latest failover was reported: the migration grace runs from it. The job
        of an earlier failover, run late or re-run by RQ, must not move it back (callers
        hold the session lock)."""
        key = keys.recording(sid)
        current = _int(cast(bytes | None, self.redis.hget(key, "failover_ms")))
        pipe = self.redis.pipeline(transaction=True)
        if current is None or at_ms > current:
            pipe.hset(key, "failover_ms", at_ms)
        pipe.expire(key, self.retention)
        pipe.execute()

    def set_verification(
        self, sid: str, *, verified_ms: int | None, details: Mapping[str, Any]
    ) -> None:
        key = keys.recording(sid)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, "verification", _json(details))
        pipe.hincrby(key, "storage_checks", 1)
        if verified_ms is not None:
            pipe.hsetnx(key, "verified_ms", verified_ms)
        pipe.expire(key, self.retention)
        pipe.execute()

    def schedule(self, sid: str, due_ms: int) -> None:
        """When the sweep should look at the session next (reconciliation decides)."""
        self.redis.zadd(keys.active_recordings(), {sid: due_ms})

    def finish(self, sid: str) -> None:
        """The session needs no more sweeping."""
        self.redis.zrem(keys.active_recordings(), sid)

    def due(self, now_ms: int, limit: int = 500) -> list[str]:
        """Active sessions whose next look is due."""
        sids = cast(
            list[bytes],
            self.redis.zrangebyscore(keys.active_recordings(), "-inf", now_ms, start=0, num=limit),
        )
        return [s.decode() for s in sids]
