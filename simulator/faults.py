"""Fault knobs, set per channel name (cname) through PUT /_simulator/faults/<cname>.

A recording reads its channel's faults as it goes, so a fault set mid-session applies from
the next decision on (next callback, the stop call, the end of the session).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

BACKUPED: Final = "backuped"  # 32 instead of 31; files appear later, playlist renamed
BACKUPED_NEVER_RESTORED: Final = "backuped_never_restored"  # 32, and the files never appear
STOP_206: Final = "stop_206"  # every stop answers 206 code 65; no 31/32 callback
NOTHING_RECORDED: Final = "nothing_recorded"  # nobody publishes; stop answers 206 code 435
DUPLICATE: Final = "duplicate"  # each callback twice (same noticeId) + a redundant copy
REORDER: Final = "reorder"  # callbacks shuffled within windows of options.reorder_window
RECORDER_ERROR: Final = "recorder_error"  # event 1 (module 0, errorCode 52), then exit
IDLE_EXIT: Final = "idle_exit"  # exits by itself after options.max_idle_s: 41 leaveCode 4
NO_RECORDER_START: Final = "no_recorder_start"  # 40 and 30 are never sent
DROP_PREFIX: Final = "drop:"  # "drop:31": that eventType is never delivered
FAILOVER: Final = "failover"  # event 12 (newUid) once recording runs
SLICE_TO_BACKUP: Final = "slice_to_backup"  # event 2: uploader warning 32 while recording
UPLOAD_FAILED: Final = "upload_failed"  # the final 31 carries a non-zero status
DOWNLOAD_FAILED: Final = "download_failed"  # event 90 after the session exits
STOP_EXTRA_FILE: Final = "stop_extra_file"  # stop's fileList names a file no callback does

NAMES: Final[frozenset[str]] = frozenset(
    {
        BACKUPED,
        BACKUPED_NEVER_RESTORED,
        STOP_206,
        NOTHING_RECORDED,
        DUPLICATE,
        REORDER,
        RECORDER_ERROR,
        IDLE_EXIT,
        NO_RECORDER_START,
        FAILOVER,
        SLICE_TO_BACKUP,
        UPLOAD_FAILED,
        DOWNLOAD_FAILED,
        STOP_EXTRA_FILE,
    }
)


class FaultError(ValueError):
    """A fault request the simulator does not understand."""


@dataclass(frozen=True)
class Faults:
    """The misbehaviours asked for one cname; durations are simulated seconds."""

    names: frozenset[str] = frozenset()
    dropped_events: frozenset[int] = frozenset()
    max_idle_s: float = 30.0  # Agora's default maxIdleTime
    restore_delay_s: float = 60.0
    reorder_window: int = 3
    publishers: tuple[str, ...] | None = None
    requested: tuple[str, ...] = field(default=(), compare=False)

    def has(self, name: str) -> bool:
        return name in self.names

    def is_dropped(self, event_type: int) -> bool:
        return event_type in self.dropped_events

    @classmethod
    def from_json(cls, body: Any) -> Faults:
        """Parse {"faults": [...], "options": {...}}.

        Raises:
            FaultError: unknown fault or option, or a value of the wrong type.
        """
        if not isinstance(body, Mapping):
            raise FaultError('expected a JSON object {"faults": [...], "options": {...}}')
        requested = body.get("faults", [])
        options = body.get("options", {})
        if not isinstance(requested, list) or not all(isinstance(n, str) for n in requested):
            raise FaultError('"faults" must be a list of strings')
        if not isinstance(options, Mapping):
            raise FaultError('"options" must be an object')
        names, dropped = set(), set()
        for name in requested:
            if name.startswith(DROP_PREFIX):
                dropped.add(_event_type(name))
            elif name in NAMES:
                names.add(name)
            else:
                raise FaultError(f"unknown fault {name!r}; known: {sorted(NAMES)} and drop:<n>")
        unknown = set(options) - {"max_idle_s", "restore_delay_s", "reorder_window", "publishers"}
        if unknown:
            raise FaultError(f"unknown options {sorted(unknown)}")
        publishers = options.get("publishers")
        if publishers is not None and (
            not isinstance(publishers, list) or not all(isinstance(p, str) for p in publishers)
        ):
            raise FaultError('"publishers" must be a list of uid strings')
        return cls(
            names=frozenset(names),
            dropped_events=frozenset(dropped),
            max_idle_s=_number(options, "max_idle_s", cls.max_idle_s),
            restore_delay_s=_number(options, "restore_delay_s", cls.restore_delay_s),
            reorder_window=max(2, int(_number(options, "reorder_window", cls.reorder_window))),
            publishers=tuple(publishers) if publishers is not None else None,
            requested=tuple(requested),
        )

    def to_json(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "max_idle_s": self.max_idle_s,
            "restore_delay_s": self.restore_delay_s,
            "reorder_window": self.reorder_window,
        }
        if self.publishers is not None:
            options["publishers"] = list(self.publishers)
        return {"faults": list(self.requested), "options": options}


class FaultBook:
    """Faults per cname, written by the control endpoint and read by recordings."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_cname: dict[str, Faults] = {}

    def set(self, cname: str, faults: Faults) -> None:
        with self._lock:
            self._by_cname[cname] = faults

    def clear(self, cname: str) -> None:
        with self._lock:
            self._by_cname.pop(cname, None)

    def get(self, cname: str) -> Faults:
        with self._lock:
            return self._by_cname.get(cname, NO_FAULTS)


NO_FAULTS: Final = Faults()


def _event_type(name: str) -> int:
    text = name.removeprefix(DROP_PREFIX)
    if not text.isdigit():
        raise FaultError(f"{name!r}: expected drop:<eventType>, e.g. drop:31")
    return int(text)


def _number(options: Mapping[str, Any], key: str, default: float) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise FaultError(f'"{key}" must be a non-negative number')
    return float(value)
