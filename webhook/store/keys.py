"""The whole Redis key schema. Nothing outside this module spells a key.

docs/redis-keys.md documents these keys as a contract for ops dashboards; bump
SCHEMA_VERSION whenever a key or a field changes meaning.
"""

from __future__ import annotations

import zlib

PREFIX = "agora"
SCHEMA_VERSION = 2


# On Redis Cluster the store's global keys (indexes, counters, pending hand-offs, the
# rejected log) are split into SHARDS keys each, so no single key and no single node takes
# every write. A session's global entries all go to the shard of its sid; a refused
# request's to the shard of its client. On one Redis primary there is one key of each
# (shard None) and the record script writes them in the same round trip as the session.
SHARDS = 16


def shard_of(text: str) -> int:
    """The global shard a sid (or a client address) belongs to, stable across processes."""
    return zlib.crc32(text.encode()) % SHARDS


def _global(name: str, shard: int | None) -> str:
    # {g<n>} is a Cluster hash tag: every global key of one shard lands in one slot, so a
    # session's index, counter and hand-off updates are one atomic script there.
    return f"{PREFIX}:{name}" if shard is None else f"{PREFIX}:{{g{shard}}}:{name}"


def _tagged(sid: str, kind: str) -> str:
    # {sid} is a Cluster hash tag: every key of one session lands in one slot.
    return f"{PREFIX}:{{{sid}}}:{kind}"


def events(sid: str) -> str:
    """Stream: the session's event log, one entry per callback received (raw body kept)."""
    return _tagged(sid, "events")


def session(sid: str) -> str:
    """Hash: the session summary, derived from the events in an order-independent way."""
    return _tagged(sid, "session")


def notices(sid: str) -> str:
    """Hash: the dedupe index. "e <eventType> <sequence> <uid>" -> "<noticeId> <entry id>"
    for the copy that counts; noticeId -> entry id for redundant copies and for callbacks
    without a sequence."""
    return _tagged(sid, "notices")


def files(sid: str) -> str:
    """String: JSON array, the file list of the session's latest event that carried one."""
    return _tagged(sid, "files")


def sequences(sid: str) -> str:
    """Bitmap: bit n set when an event with payload.sequence n was received."""
    return _tagged(sid, "seqs")


def recording(sid: str) -> str:
    """Hash: what the app did (start and stop as forwarded or made through our client) and
    what reconciliation concluded (lifecycle state, deadlines, verification)."""
    return _tagged(sid, "recording")


def calls(sid: str) -> str:
    """Stream: every app call for the session (REST exchanges and forwarded start/stop),
    request summaries without secrets."""
    return _tagged(sid, "calls")


def session_alerts(sid: str) -> str:
    """Set: the alert kinds ever raised for the session."""
    return _tagged(sid, "alerts")


def session_lock(sid: str) -> str:
    """String: held while a job works on the session, so two never interleave."""
    return _tagged(sid, "lock")


def alert(alert_id: str) -> str:
    """Hash: one alert (see webhook.alerts.Alert)."""
    return f"{PREFIX}:alert:{alert_id}"


def alerts_by_state(state: str) -> str:
    """Sorted set: alert ids in one state (open, acknowledged, resolved) by last change."""
    return f"{PREFIX}:alerts:{state}"


def alert_deliveries() -> str:
    """Stream, capped: every alert delivery attempt to a sink, with its outcome."""
    return f"{PREFIX}:alert-deliveries"


def active_recordings() -> str:
    """Sorted set: sids not yet in a final state, scored by when reconciliation should next
    look at them (ms); the periodic sweep walks it."""
    return f"{PREFIX}:recordings:active"


def recordings_by_state(state: str) -> str:
    """Sorted set: the sids in one lifecycle state, scored by when they entered it (ms)."""
    return f"{PREFIX}:recordings:state:{state}"


def sessions_by_activity(shard: int | None = None) -> str:
    """Sorted set: sid scored by the last arrival time (ms)."""
    return _global("sessions", shard)


def sessions_by_cname(cname: str, shard: int | None = None) -> str:
    """Sorted set: the sids of one channel, scored by the last arrival time (ms)."""
    return _global(f"cname:{cname}", shard)


def stats(shard: int | None = None) -> str:
    """Hash: counters by outcome: stored, duplicate, redundant, invalid, unknown_type,
    rejected:<reason>."""
    return _global("stats", shard)


def outcomes_in_minute(minute: int, shard: int | None = None) -> str:
    """Hash, kept a day: the stats counters of callbacks that arrived in one minute
    (minute = arrival ms // 60000), plus rejected:<reason>; the dashboard's traffic chart."""
    return _global(f"stats:minute:{minute}", shard)


def worker_counters() -> str:
    """Hash: "<family>:<label>" -> count of what the workers did (reconciliations by
    state, storage checks by outcome, Agora queries by status, alert transitions)."""
    return f"{PREFIX}:worker-stats"


def pending_handoffs(shard: int | None = None) -> str:
    """Sorted set: "<sid> <noticeId> <entry id>" of callbacks whose follow-up job has not
    finished, scored by arrival time (ms)."""
    return _global("handoffs:pending", shard)


def ready_handoffs(shard: int | None = None) -> str:
    """List: pending_handoffs members waiting for the workers' relay to enqueue their job,
    oldest first (the record script pushes, the relay pops). A member the relay took but
    could not enqueue is still in pending_handoffs, where the sweep finds it."""
    return _global("handoffs:ready", shard)


def session_handoffs(sid: str) -> str:
    """Sorted set, on Redis Cluster only: the session's own members of pending_handoffs, so
    the record script can tell a resend whose hand-off is unfinished without leaving the
    session's slot."""
    return _tagged(sid, "handoffs")


def rejected(shard: int | None = None) -> str:
    """Stream, capped: refused requests with reason, time, remote address and body."""
    return _global("rejected", shard)


def refusals_by_client(client: str, shard: int | None = None) -> str:
    """String (counter), expires with its window: requests from one client (an IPv4
    address, or an IPv6 /64) refused because they failed verification; beyond
    AGORA_BAD_SIGNATURE_LIMIT they are answered 429 (webhook.store.ratelimit)."""
    return _global(f"refusals:{client}", shard)


def readiness_probe() -> str:
    """String, expires in 10 s: what /readyz writes to learn that Redis takes writes (a
    replica, a primary out of memory under noeviction, or one whose snapshot failed answer
    reads and refuse every write)."""
    return f"{PREFIX}:readyz"


def schema_version() -> str:
    """String: the version of this key schema (SCHEMA_VERSION)."""
    return f"{PREFIX}:schema-version"


def handoff_member(sid: str, notice_id: str, entry_id: str) -> str:
    """The pending_handoffs member for one callback; ids never contain spaces."""
    return f"{sid} {notice_id} {entry_id}"


def parse_handoff_member(member: str) -> tuple[str, str, str]:
    sid, notice_id, entry_id = member.split(" ", 2)
    return sid, notice_id, entry_id
