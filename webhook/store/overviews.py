"""One line per session for lists (API and dashboard): a page of rows in three round trips,
however many sessions the store holds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from redis import Redis

from webhook.alerts import alert_id
from webhook.events import is_console_test
from webhook.store import keys
from webhook.store.connections import StoreClient

_SUMMARY_FIELDS = ("cname", "last_seen_ms", "upload_status", "upload_progress", "uid")


@dataclass(frozen=True)
class SessionRow:
    """What a list shows of one session."""

    sid: str
    cname: str | None
    state: str
    last_seen_ms: int | None
    upload_status: str | None
    upload_progress: int | None
    # Kinds of the alerts not resolved yet (open or acknowledged), sorted.
    active_alerts: tuple[str, ...]
    # Callbacks of the Console's Check button, not of a recording (webhook.events).
    console_test: bool = False


def session_rows(store: StoreClient, redis: Redis, sids: Sequence[str]) -> list[SessionRow]:
    """Rows for these sessions, in the same order: the summary's few fields (from the event
    store, which may be a Redis Cluster), the lifecycle state and the session's alert kinds
    (from the primary), then those alerts' states: a pipeline each."""
    if not sids:
        return []
    pipe = store.pipeline(transaction=False)
    for sid in sids:
        pipe.hmget(keys.session(sid), _SUMMARY_FIELDS)
    summaries = cast(list[list[bytes | None]], pipe.execute())
    pipe = redis.pipeline(transaction=False)
    for sid in sids:
        pipe.hmget(keys.recording(sid), ("state", "cname"))
        pipe.smembers(keys.session_alerts(sid))
    replies = pipe.execute()
    recordings = cast(list[list[bytes | None]], replies[0::2])
    kinds = [sorted(k.decode() for k in cast(set[bytes], found)) for found in replies[1::2]]
    states = _alert_states(redis, sids, kinds)
    rows = []
    for sid, summary, recording, session_kinds in zip(
        sids, summaries, recordings, kinds, strict=True
    ):
        cname, last_seen, upload_status, progress, uid = summary
        state, started_cname = recording
        rows.append(
            SessionRow(
                sid=sid,
                cname=_text(cname) or _text(started_cname),
                state=_text(state) or "unknown",
                last_seen_ms=None if last_seen is None else int(last_seen),
                upload_status=_text(upload_status),
                upload_progress=None if not progress else int(progress),
                active_alerts=tuple(
                    kind
                    for kind in session_kinds
                    if states.get((sid, kind)) in ("open", "acknowledged")
                ),
                console_test=is_console_test(_text(cname), _text(uid)),
            )
        )
    return rows


def _alert_states(
    redis: Redis, sids: Sequence[str], kinds: list[list[str]]
) -> dict[tuple[str, str], str]:
    wanted = [(sid, kind) for sid, session_kinds in zip(sids, kinds, strict=True)
              for kind in session_kinds]  # fmt: skip
    if not wanted:
        return {}
    pipe = redis.pipeline(transaction=False)
    for sid, kind in wanted:
        pipe.hget(keys.alert(alert_id(sid, kind)), "state")
    states = cast(list[bytes | None], pipe.execute())
    return {pair: state.decode() for pair, state in zip(wanted, states, strict=True) if state}


def _text(value: bytes | None) -> str | None:
    return value.decode() if value else None
