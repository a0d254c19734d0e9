"""CallbackStore: durable, idempotent storage of Agora callbacks, one event log per sid."""

from __future__ import annotations

import contextlib
import heapq
import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from importlib import resources
from typing import Any, Literal, TypeVar, cast

import orjson
from redis import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from webhook.errors import StoreUnavailableError
from webhook.events import Callback, RecordedFile
from webhook.store import keys
from webhook.store.connections import StoreClient
from webhook.store.pages import newest_first

logger = logging.getLogger(__name__)

Outcome = Literal["stored", "duplicate", "redundant"]
T = TypeVar("T")
STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")
# redis-py types replies loosely; with decode_responses off these are the real shapes.
StreamEntry = tuple[bytes, dict[bytes, bytes]]

# A session's log is bounded; at one progress tick a minute even a 720-hour recording
# (Agora's maximum) stays below it.
MAX_EVENTS_PER_SESSION = 100_000
# Sequences above this are stored but not tracked for gaps (the bitmap would be huge).
SEQUENCE_LIMIT = 1_000_000
# How often, at most, a session's TTLs are pushed back and the indexes trimmed.
MAX_REFRESH_INTERVAL = timedelta(hours=1)
# The per-minute outcome counters feed the dashboard's traffic chart; a day is plenty.
MINUTE_COUNTS_TTL_S = 24 * 3600
# On Redis Cluster the relay polls the shards' ready lists this often when they are empty.
CLUSTER_READY_POLL_S = 0.2

_RECORD_LUA = resources.files("webhook.store").joinpath("lua/record_callback.lua").read_text()
_APPLY_EFFECTS_LUA = resources.files("webhook.store").joinpath("lua/apply_effects.lua").read_text()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class RecordResult:
    """What record() did with one callback."""

    outcome: Outcome
    # True when the callback was handed off to the workers: a follow-up event stored for the
    # first time, or resent while its job has not finished. The hand-off is in Redis
    # (pending and ready) once record() returns; the workers' relay enqueues the job.
    needs_handoff: bool
    # The log entry of this callback (for a duplicate: of its first delivery).
    entry_id: str
    # For a redundant copy, the noticeId of the copy that counts.
    duplicate_of: str | None = None


@dataclass(frozen=True)
class StoredEvent:
    """One entry of a session's event log."""

    entry_id: str
    notice_id: str
    event_type: int
    sequence: int | None
    sendts: int | None
    received_ms: int
    body: bytes
    errors: Mapping[str, Any]
    redundant_of: str | None

    @property
    def document(self) -> Any:
        return orjson.loads(self.body)


@dataclass(frozen=True)
class SessionSummary:
    """What the event log says about one recording session."""

    sid: str
    cname: str | None
    uid: str | None
    first_seen_ms: int
    last_seen_ms: int
    first_event_ms: int | None
    last_event_ms: int | None
    last_event_type: int | None
    events: int
    counts: Mapping[int, int]
    invalid: int
    unknown_type: int
    duplicates: int
    redundant: int
    upload_progress: int | None
    upload_status: str | None
    upload_ok: bool | None
    # 31/32 events with a non-zero status, whichever is the latest.
    upload_failures: int
    files: tuple[RecordedFile, ...]
    max_sequence: int | None
    sequence_gaps: int
    sequence_beyond_limit: int


@dataclass(frozen=True)
class Rejection:
    """A request we refused, kept so an operator can inspect and replay it."""

    reason: str
    status: int
    message: str
    received_ms: int
    remote_addr: str | None
    body: bytes
    body_truncated: bool
    # Only headers needed to replay (content type, Agora's signature MACs); never cookies,
    # tokens or authorization.
    headers: Mapping[str, str] = field(default_factory=dict)
    entry_id: str | None = None


@contextmanager
def _confirmed_write() -> Iterator[None]:
    """Turn any failure to get Redis's confirmation into StoreUnavailableError."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError) as err:
        raise StoreUnavailableError("the event store is unreachable; retry later") from err
    except RedisError as err:
        # e.g. OOM under noeviction, or a replica that refuses writes: still not stored.
        raise StoreUnavailableError("the event store refused the write; retry later") from err


def _errors_json(errors: Mapping[str, Any]) -> str | bytes:
    """marshmallow keys the messages of a list's items by their index (an int): JSON keys
    must be strings, so they become "0", "1", ... (found by fuzzing the endpoint)."""
    return orjson.dumps(errors, option=orjson.OPT_NON_STR_KEYS) if errors else ""


def _files_json(files: tuple[RecordedFile, ...] | None) -> str:
    """The file list for the summary; "" when the event gives none. An empty list is none:
    web mode's uploaded and backuped carry no file list (FACTS §3), and one sent as []
    must not wipe the list web_recorder_stopped gave."""
    if not files:
        return ""
    return orjson.dumps(
        [
            {
                "file_name": f.file_name,
                "track_type": f.track_type,
                "uid": f.uid,
                "mixed_all_user": f.mixed_all_user,
                "is_playable": f.is_playable,
                "slice_start_ms": f.slice_start_ms,
            }
            for f in files
        ]
    ).decode()


def _int(value: bytes | None) -> int | None:
    return int(value) if value not in (None, b"", b"-1") else None


class CallbackStore:
    """Durable, idempotent storage of Agora callbacks, one event log per recording sid."""

    def __init__(
        self,
        redis: StoreClient,
        *,
        retention: timedelta = timedelta(days=30),
        dedupe_window: timedelta = timedelta(days=7),
        rejected_max: int = 1000,
        min_replicas: int = 0,
        replica_timeout: timedelta = timedelta(milliseconds=500),
    ) -> None:
        self.redis = redis
        self.retention = retention
        self.dedupe_window = dedupe_window
        self.rejected_max = rejected_max
        # A write is confirmed only once this many replicas have it too (Redis WAIT), so a
        # failover to one of them cannot lose what we acknowledged.
        self.min_replicas = min_replicas
        self.replica_timeout = replica_timeout
        # On Redis Cluster the global keys are sharded (see keys.SHARDS) and written in a
        # second step; on one primary everything is one script, one round trip.
        self.clustered = isinstance(redis, RedisCluster)
        self.shards: tuple[int | None, ...] = (
            tuple(range(keys.SHARDS)) if self.clustered else (None,)
        )
        if self.clustered and min_replicas:
            raise ValueError("WAIT for replicas is not available on Redis Cluster")
        self._record = redis.register_script(self._record_script())
        self._apply_effects = redis.register_script(_APPLY_EFFECTS_LUA)
        if self.clustered:
            # The version key is in a slot of its own, out of the record script's reach:
            # it is written here instead (a store that cannot reach Redis yet writes it
            # the next time one is built, and callbacks get 503 meanwhile anyway).
            with contextlib.suppress(RedisError):
                redis.set(keys.schema_version(), keys.SCHEMA_VERSION)

    def _record_script(self) -> str:
        retention_s = int(self.retention.total_seconds())
        refresh = min(MAX_REFRESH_INTERVAL, self.retention / 10)
        # A noticeId is remembered at least as long as the dedupe window, and as long as
        # the session's log. TTLs are pushed back at most once per refresh interval, so a
        # notice added up to one interval after a push may live only TTL - refresh: the
        # window gets that margin on top.
        # (The notifyMs age check relies on it: a replay it lets through must still be
        # recognised, see Settings.from_env.)
        notices_ttl_s = max(retention_s, math.ceil((self.dedupe_window + refresh).total_seconds()))
        settings = (
            f"local retention, notices_ttl, refresh_ms = {retention_s}, {notices_ttl_s}, "
            f"{int(refresh.total_seconds() * 1000)}\n"
            f"local seq_limit, maxlen, version = {SEQUENCE_LIMIT}, {MAX_EVENTS_PER_SESSION}, "
            f"{keys.SCHEMA_VERSION}\n"
            f"local minute_ttl = {MINUTE_COUNTS_TTL_S}\n"
            f"local cluster = {int(self.clustered)}\n"
        )
        return settings + _RECORD_LUA

    def record(self, callback: Callback, raw_body: bytes, *, received_ms: int) -> RecordResult:
        """Append the callback once (dedupe on noticeId) in one atomic round trip.

        Raises:
            StoreUnavailableError: Redis did not confirm the write.
        """
        sid = callback.sid
        upload_status = callback.upload_status
        detail_status = callback.detail_status
        files = callback.files
        progress = callback.progress
        args = (
            callback.notice_id,
            callback.event_type,
            "" if callback.sequence is None else callback.sequence,
            callback.uid or "",
            callback.cname or "",
            "" if callback.sendts is None else callback.sendts,
            received_ms,
            raw_body,
            _errors_json(callback.errors),
            1 if callback.is_known_type else 0,
            1 if callback.needs_follow_up else 0,
            "" if progress is None else progress,
            upload_status or "",
            "" if upload_status is None or detail_status is None else int(detail_status == 0),
            _files_json(files),
            callback.event_type if files else "",
            sid,
        )
        session_keys = (
            keys.events(sid), keys.session(sid), keys.notices(sid), keys.sequences(sid),
            keys.files(sid),
        )  # fmt: skip
        with _confirmed_write():
            if self.clustered:
                reply = self._record(keys=(*session_keys, keys.session_handoffs(sid)), args=args)
                self._apply(sid, callback.cname or "", received_ms, reply[4])
            else:
                key_list = (
                    *session_keys,
                    keys.pending_handoffs(),
                    keys.sessions_by_activity(),
                    keys.sessions_by_cname(callback.cname or ""),
                    keys.stats(),
                    keys.schema_version(),
                    keys.outcomes_in_minute(received_ms // 60_000),
                    keys.ready_handoffs(),
                )
                if self.min_replicas:
                    reply = self._record_replicated(key_list, args)
                else:
                    reply = self._record_once(key_list, args)
        outcome, pending, duplicate_of, entry_id = reply[:4]
        return RecordResult(
            outcome=outcome.decode(),
            needs_handoff=bool(pending),
            entry_id=entry_id.decode(),
            duplicate_of=duplicate_of.decode() or None,
        )

    def _record_once(self, key_list: tuple[str, ...], args: tuple[Any, ...]) -> Any:
        """EVALSHA straight through the client: redis-py's Script wrapper adds three call
        layers to every callback (measured ~2 µs), for the one case handled here."""
        command = ("EVALSHA", self._record.sha, len(key_list), *key_list, *args)
        return self._with_script_loaded(
            lambda: self.redis.execute_command(*command)  # type: ignore[no-untyped-call]  # unannotated upstream
        )

    def _record_replicated(self, key_list: tuple[str, ...], args: tuple[Any, ...]) -> Any:
        """The record script and WAIT in one round trip. A duplicate waits too: Agora's
        retry after a 503 is answered 200 only once the replicas caught up."""

        def run() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            # EVALSHA itself: a pipeline that runs a registered Script asks SCRIPT EXISTS
            # first, which would be a second round trip on every callback.
            pipe.evalsha(self._record.sha, len(key_list), *key_list, *args)
            pipe.wait(self.min_replicas, int(self.replica_timeout.total_seconds() * 1000))
            return pipe.execute()

        reply, replicas = self._with_script_loaded(run)
        if int(replicas) < self.min_replicas:
            raise StoreUnavailableError(
                f"stored, but {replicas} of {self.min_replicas} replica(s) confirmed it "
                "in time; retry later"
            )
        return reply

    def _with_script_loaded(self, run: Callable[[], T]) -> T:
        """run(), and once more after loading the record script if Redis lacked it: a
        restarted or failed-over Redis has an empty script cache."""
        try:
            return run()
        except NoScriptError:
            self.redis.script_load(self._record.script)
            return run()

    def _apply(self, sid: str, cname: str, received_ms: int, effects: list[bytes]) -> None:
        """Redis Cluster: the global writes the record script asked for, in the sid's shard
        (one more round trip). If this fails, the caller answers 503 and Agora's resend
        redoes the idempotent ones (see record_callback.lua)."""
        if not effects:
            return
        shard = keys.shard_of(sid)
        self._apply_effects(
            keys=(
                keys.sessions_by_activity(shard), keys.sessions_by_cname(cname, shard),
                keys.stats(shard), keys.outcomes_in_minute(received_ms // 60_000, shard),
                keys.pending_handoffs(shard), keys.ready_handoffs(shard),
            ),
            args=(sid, cname, received_ms, int(self.retention.total_seconds()),
                  MINUTE_COUNTS_TTL_S, *effects),
        )  # fmt: skip

    def complete_handoff(self, sid: str, notice_id: str, entry_id: str) -> None:
        """The follow-up job for this callback has finished: stop re-enqueuing it."""
        member = keys.handoff_member(sid, notice_id, entry_id)
        if self.clustered:
            self.redis.zrem(keys.session_handoffs(sid), member)
            self.redis.zrem(keys.pending_handoffs(keys.shard_of(sid)), member)
        else:
            self.redis.zrem(keys.pending_handoffs(), member)

    def take_ready_handoffs(
        self, limit: int = 100, *, block: timedelta | None = None
    ) -> list[tuple[str, str, str]]:
        """(sid, noticeId, entry id) of up to `limit` hand-offs waiting for their job (on
        Cluster: up to `limit` from each shard), oldest first, taken off the relay's list;
        `block` waits that long for a first one (use a client without a shorter socket
        timeout, as the workers' is). Those whose job has finished meanwhile (no longer
        pending) are left out.

        A hand-off taken here and then not enqueued (the relay died, Redis failed) stays in
        pending_handoffs, and the sweep enqueues it after HANDOFF_GRACE_MS."""
        members = self._pop_ready(limit, block)
        if not members:
            return []
        taken = [keys.parse_handoff_member(member) for member in members]
        pipe = self.redis.pipeline(transaction=False)
        for member, (sid, _, _) in zip(members, taken, strict=True):
            shard = keys.shard_of(sid) if self.clustered else None
            pipe.zscore(keys.pending_handoffs(shard), member)
        return [
            handoff
            for handoff, score in zip(taken, pipe.execute(), strict=True)
            if score is not None
        ]

    def handoffs_waiting(self) -> int:
        """Hand-offs on the relay's list(s): it grows while no worker runs."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in self.shards:
            pipe.llen(keys.ready_handoffs(shard))
        return sum(cast(list[int], pipe.execute()))

    def _pop_ready(self, limit: int, block: timedelta | None) -> list[str]:
        if not self.clustered:
            ready = keys.ready_handoffs()
            taken: list[bytes] = []
            if block is not None:
                # BLPOP wakes the moment a callback pushes; then take the rest without waiting.
                first = cast(
                    tuple[bytes, bytes] | None,
                    self.redis.blpop([ready], timeout=max(1, round(block.total_seconds()))),
                )
                if first is None:
                    return []
                taken.append(first[1])
                limit -= 1
            if limit > 0:
                taken += cast(list[bytes] | None, self.redis.lpop(ready, limit)) or []
            return [member.decode() for member in taken]
        # Redis Cluster: one list per shard, in different slots, so no single blocking pop
        # can wait on all of them; poll them together instead (up to `limit` from each: a
        # busy session keeps all its hand-offs in one shard).
        deadline = time.monotonic() + (block.total_seconds() if block else 0)
        while True:
            pipe = self.redis.pipeline(transaction=False)
            for shard in self.shards:
                pipe.lpop(keys.ready_handoffs(shard), limit)
            found = [m.decode() for rows in pipe.execute() if rows for m in rows]
            if found or time.monotonic() >= deadline:
                return found
            time.sleep(CLUSTER_READY_POLL_S)

    def pending_handoffs(
        self, *, older_than_ms: int, limit: int = 1000
    ) -> list[tuple[str, str, str]]:
        """(sid, noticeId, entry id) of callbacks whose follow-up job has not confirmed
        since older_than_ms, oldest first."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in self.shards:
            pipe.zrangebyscore(
                keys.pending_handoffs(shard), "-inf", older_than_ms, start=0, num=limit,
                withscores=True,
            )  # fmt: skip
        found = cast(list[list[tuple[bytes, float]]], pipe.execute())
        oldest = heapq.nsmallest(limit, (row for rows in found for row in rows),
                                 key=lambda row: (row[1], row[0]))  # fmt: skip
        return [keys.parse_handoff_member(member.decode()) for member, _ in oldest]

    def record_rejected(self, rejection: Rejection) -> str:
        """Keep a refused request (bounded) and count it by reason.

        Raises:
            StoreUnavailableError: Redis did not confirm the write.
        """
        fields: dict[str, str | bytes | int] = {
            "reason": rejection.reason,
            "status": rejection.status,
            "message": rejection.message,
            "recv": rejection.received_ms,
            "remote_addr": rejection.remote_addr or "",
            "headers": orjson.dumps(dict(rejection.headers)),
            "truncated": int(rejection.body_truncated),
            "body": rejection.body,
        }
        # On Cluster the client's shard holds the log entry and its counters: one slot, so
        # still one transaction. Each shard keeps its share of the bound.
        shard = keys.shard_of(rejection.remote_addr or "") if self.clustered else None
        bound = -(-self.rejected_max // len(self.shards))
        with _confirmed_write():
            pipe = self.redis.pipeline(transaction=True)
            pipe.xadd(keys.rejected(shard), fields, maxlen=bound, approximate=False)  # type: ignore[arg-type]  # redis-py's stub wants a narrower dict type
            pipe.hincrby(keys.stats(shard), f"rejected:{rejection.reason}", 1)
            minute = keys.outcomes_in_minute(rejection.received_ms // 60_000, shard)
            pipe.hincrby(minute, f"rejected:{rejection.reason}", 1)
            pipe.expire(minute, MINUTE_COUNTS_TTL_S)
            entry_id = cast(bytes, pipe.execute()[0]).decode()
        return entry_id if shard is None else f"g{shard}-{entry_id}"

    def rejected(self, count: int = 100) -> list[Rejection]:
        """The most recent refused requests, newest first."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in self.shards:
            pipe.xrevrange(keys.rejected(shard), count=count)
        found = cast(list[list[StreamEntry]], pipe.execute())
        tagged = [
            (_stream_order(entry_id), shard, entry_id, fields)
            for shard, entries in zip(self.shards, found, strict=True)
            for entry_id, fields in entries
        ]
        newest = heapq.nlargest(count, tagged, key=lambda row: row[0])
        return [
            replace(_rejection(entry_id, fields),
                    entry_id=_rejected_id(shard, entry_id.decode()))
            for _, shard, entry_id, fields in newest
        ]  # fmt: skip

    def rejected_entry(self, entry_id: str) -> Rejection | None:
        """One kept refused request by its id (None for anything not an id we gave)."""
        shard: int | None = None
        if self.clustered:
            tag, _, entry_id = entry_id.partition("-")
            if not tag.startswith("g") or not tag[1:].isdigit():
                return None
            shard = int(tag[1:])
            if shard not in self.shards:
                return None
        if not STREAM_ID.fullmatch(entry_id):
            return None
        found = cast(
            list[StreamEntry],
            self.redis.xrange(keys.rejected(shard), min=entry_id, max=entry_id),
        )
        if not found:
            return None
        return replace(_rejection(*found[0]), entry_id=_rejected_id(shard, entry_id))

    def events(self, sid: str, *, latest: int | None = None) -> list[StoredEvent]:
        """The session's log in arrival order; only its `latest` entries when given."""
        if latest is None:
            entries = cast(list[StreamEntry], self.redis.xrange(keys.events(sid)))
        else:
            newest = cast(list[StreamEntry], self.redis.xrevrange(keys.events(sid), count=latest))
            entries = newest[::-1]
        return [_stored_event(entry_id, fields) for entry_id, fields in entries]

    def event(self, sid: str, entry_id: str) -> StoredEvent | None:
        """One logged callback by its log entry id."""
        found = cast(
            list[StreamEntry], self.redis.xrange(keys.events(sid), min=entry_id, max=entry_id)
        )
        return _stored_event(*found[0]) if found else None

    def session(self, sid: str) -> SessionSummary | None:
        """The summary of one session, or None when nothing was received for it."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(keys.session(sid))
        pipe.get(keys.files(sid))
        data, files = cast(tuple[dict[bytes, bytes], bytes | None], pipe.execute())
        if not data or b"events" not in data:
            return None
        return _summary(sid, data, files)

    def note_activity(self, sid: str, cname: str, at_ms: int) -> None:
        """A session the app told us about (its start or stop reported), in the activity
        indexes as one a callback told us about: the lists, the channel filter and the
        export find it before any callback arrives, or when none ever does (a recorder that
        never started). A later time only moves it forward (GT), as callbacks do."""
        shard = keys.shard_of(sid) if self.clustered else None
        by_cname = keys.sessions_by_cname(cname, shard)
        # On Cluster both keys carry the shard's hash tag: one slot, one node.
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(keys.sessions_by_activity(shard), {sid: at_ms}, gt=True)
            if cname:
                pipe.zadd(by_cname, {sid: at_ms}, gt=True)
                pipe.expire(by_cname, int(self.retention.total_seconds()))
            pipe.execute()

    def recent_sessions(
        self,
        *,
        cname: str | None = None,
        since_ms: int | None = None,
        after: tuple[int, str] | None = None,
        limit: int = 50,
    ) -> list[tuple[str, int]]:
        """(sid, last activity ms), most recent first, from the indexes (never a SCAN).

        `after` is the (score, sid) of the last row of the previous page."""
        index = [
            keys.sessions_by_cname(cname, shard) if cname else keys.sessions_by_activity(shard)
            for shard in self.shards
        ]
        return newest_first(self.redis, index, since_ms=since_ms, after=after, limit=limit)

    def prune(self, now_ms: int) -> int:
        """Apply the retention to the activity index now (writes also do it as they go);
        per-session keys and channel indexes expire by themselves. Returns entries removed."""
        oldest = now_ms - int(self.retention.total_seconds() * 1000)
        pipe = self.redis.pipeline(transaction=False)
        for shard in self.shards:
            pipe.zremrangebyscore(keys.sessions_by_activity(shard), "-inf", f"({oldest}")
        return sum(int(n) for n in pipe.execute())

    def active_sessions(self) -> int:
        """How many sessions the activity index holds."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in self.shards:
            pipe.zcard(keys.sessions_by_activity(shard))
        return sum(int(n) for n in pipe.execute())

    def outcomes_per_minute(self, now_ms: int, minutes: int) -> list[tuple[int, dict[str, int]]]:
        """(minute start ms, counters) for the last `minutes` minutes, oldest first; one
        round trip (per node on Cluster)."""
        first = now_ms // 60_000 - minutes + 1
        pipe = self.redis.pipeline(transaction=False)
        for minute in range(first, first + minutes):
            for shard in self.shards:
                pipe.hgetall(keys.outcomes_in_minute(minute, shard))
        rows = cast(list[dict[bytes, bytes]], pipe.execute())
        width = len(self.shards)
        return [
            ((first + n) * 60_000, _summed(rows[n * width : (n + 1) * width]))
            for n in range(minutes)
        ]

    def stats(self) -> dict[str, int]:
        pipe = self.redis.pipeline(transaction=False)
        for shard in self.shards:
            pipe.hgetall(keys.stats(shard))
        return _summed(cast(list[dict[bytes, bytes]], pipe.execute()))


def _summed(rows: list[dict[bytes, bytes]]) -> dict[str, int]:
    """Counter hashes (one per shard) added up."""
    total: dict[str, int] = {}
    for row in rows:
        for field_name, value in row.items():
            name = field_name.decode()
            total[name] = total.get(name, 0) + int(value)
    return total


def _stream_order(entry_id: bytes) -> tuple[int, int]:
    ms, _, sequence = entry_id.partition(b"-")
    return int(ms), int(sequence)


def _rejected_id(shard: int | None, entry_id: str) -> str:
    """The id the API shows: the stream id, prefixed with its shard on Cluster."""
    return entry_id if shard is None else f"g{shard}-{entry_id}"


def _text(value: bytes | None) -> str | None:
    return value.decode() if value else None


def _stored_event(entry_id: bytes, fields: Mapping[bytes, bytes]) -> StoredEvent:
    errors = fields.get(b"errors") or b""
    return StoredEvent(
        entry_id=entry_id.decode(),
        notice_id=fields[b"nid"].decode(),
        event_type=int(fields[b"type"]),
        sequence=_int(fields.get(b"seq")),
        sendts=_int(fields.get(b"sendts")),
        received_ms=int(fields[b"recv"]),
        body=fields[b"body"],
        errors=orjson.loads(errors) if errors else {},
        redundant_of=_text(fields.get(b"redundant_of")),
    )


def _rejection(entry_id: bytes, fields: Mapping[bytes, bytes]) -> Rejection:
    return Rejection(
        entry_id=entry_id.decode(),
        reason=fields[b"reason"].decode(),
        status=int(fields[b"status"]),
        message=fields[b"message"].decode(),
        received_ms=int(fields[b"recv"]),
        remote_addr=_text(fields.get(b"remote_addr")),
        headers=orjson.loads(fields[b"headers"]),
        body_truncated=fields[b"truncated"] == b"1",
        body=fields[b"body"],
    )


def _summary(sid: str, data: Mapping[bytes, bytes], files_raw: bytes | None) -> SessionSummary:
    counts = {int(k[len(b"count:") :]): int(v) for k, v in data.items() if k.startswith(b"count:")}
    files = tuple(RecordedFile(**f) for f in orjson.loads(files_raw)) if files_raw else ()
    upload_ok = data.get(b"upload_ok")
    return SessionSummary(
        sid=sid,
        cname=_text(data.get(b"cname")),
        uid=_text(data.get(b"uid")),
        first_seen_ms=int(data[b"first_seen_ms"]),
        last_seen_ms=int(data[b"last_seen_ms"]),
        first_event_ms=_int(data.get(b"first_event_ms")),
        last_event_ms=_int(data.get(b"last_event_ms")),
        last_event_type=_int(data.get(b"last_event_type")),
        events=int(data[b"events"]),
        counts=counts,
        invalid=int(data.get(b"invalid", 0)),
        unknown_type=int(data.get(b"unknown_type", 0)),
        duplicates=int(data.get(b"duplicates", 0)),
        redundant=int(data.get(b"redundant", 0)),
        upload_progress=_int(data.get(b"upload_progress")),
        upload_status=_text(data.get(b"upload_status")),
        upload_ok=None if not upload_ok else upload_ok == b"1",
        upload_failures=int(data.get(b"upload_failures", 0)),
        files=files,
        max_sequence=_int(data.get(b"max_sequence")),
        sequence_gaps=int(data.get(b"sequence_gaps", 0)),
        sequence_beyond_limit=int(data.get(b"sequence_beyond_limit", 0)),
    )
