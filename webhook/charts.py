"""Geometry of the dashboard's two charts, computed here so templates only draw.

Server-side SVG: no JavaScript, no front-end build, and the numbers are testable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from webhook.events import EventType
from webhook.store import StoredEvent

# Traffic chart: one stacked bar per minute, series in this order from the bottom up.
TRAFFIC_SERIES = ("stored", "duplicate", "redundant", "rejected")
TRAFFIC_WIDTH, TRAFFIC_HEIGHT = 720, 160

# Timeline: a lane per kind of event, top to bottom.
LANES = ("problems", "session", "recorder", "uploader", "other")
LANE_HEIGHT, TIMELINE_LEFT, TIMELINE_WIDTH = 28, 90, 800
_LANE_OF: Mapping[int, str] = {
    EventType.CLOUD_RECORDING_ERROR: "problems",
    EventType.CLOUD_RECORDING_WARNING: "problems",
    EventType.DOWNLOAD_FAILED: "problems",
    EventType.WEB_RECORDER_CAPABILITY_LIMIT: "problems",
    EventType.SESSION_EXIT: "session",
    EventType.SESSION_FAILOVER: "session",
    EventType.CLOUD_RECORDING_STATUS_UPDATE: "session",
    EventType.UPLOADER_STARTED: "uploader",
    EventType.UPLOADED: "uploader",
    EventType.BACKUPED: "uploader",
    EventType.UPLOADING_PROGRESS: "uploader",
    EventType.RECORDER_STARTED: "recorder",
    EventType.RECORDER_LEAVE: "recorder",
    EventType.RECORDER_SLICE_START: "recorder",
    EventType.RECORDER_AUDIO_STREAM_STATE_CHANGED: "recorder",
    EventType.RECORDER_VIDEO_STREAM_STATE_CHANGED: "recorder",
    EventType.RECORDER_SNAPSHOT_FILE: "recorder",
    EventType.WEB_RECORDER_STARTED: "recorder",
    EventType.WEB_RECORDER_STOPPED: "recorder",
    EventType.WEB_RECORDER_RELOAD: "recorder",
}


@dataclass(frozen=True)
class Bar:
    """One segment of a stacked bar."""

    x: float
    y: float
    width: float
    height: float
    series: str
    count: int
    minute_ms: int


@dataclass(frozen=True)
class TrafficChart:
    bars: tuple[Bar, ...]
    peak: int
    totals: Mapping[str, int]
    width: int = TRAFFIC_WIDTH
    height: int = TRAFFIC_HEIGHT


def traffic_chart(minutes: Sequence[tuple[int, Mapping[str, int]]]) -> TrafficChart:
    """Stacked bars of callbacks per minute by outcome (rejected: every reason together)."""
    per_minute = [(start, _by_series(counts)) for start, counts in minutes]
    peak = max((sum(series.values()) for _, series in per_minute), default=0)
    slot = TRAFFIC_WIDTH / max(len(per_minute), 1)
    scale = TRAFFIC_HEIGHT / peak if peak else 0.0
    bars = []
    for index, (start, series) in enumerate(per_minute):
        bottom = float(TRAFFIC_HEIGHT)
        for name in TRAFFIC_SERIES:
            count = series[name]
            if not count:
                continue
            height = count * scale
            bottom -= height
            bars.append(Bar(
                x=round(index * slot + 1, 1), y=round(bottom, 1), width=round(slot - 2, 1),
                height=round(height, 1), series=name, count=count, minute_ms=start,
            ))  # fmt: skip
    totals = {name: sum(series[name] for _, series in per_minute) for name in TRAFFIC_SERIES}
    return TrafficChart(bars=tuple(bars), peak=peak, totals=totals)


def _by_series(counts: Mapping[str, int]) -> dict[str, int]:
    series = {name: counts.get(name, 0) for name in TRAFFIC_SERIES[:-1]}
    series["rejected"] = sum(n for k, n in counts.items() if k.startswith("rejected:"))
    return series


@dataclass(frozen=True)
class Mark:
    """One event on the timeline."""

    x: float
    y: float
    lane: str
    label: str
    sequence: int | None
    at_ms: int
    # problem: failed validation, an error event or a failed upload; copy: redundant copy.
    flag: str


@dataclass(frozen=True)
class Timeline:
    marks: tuple[Mark, ...]
    lanes: tuple[tuple[str, float], ...]
    start_ms: int
    end_ms: int
    width: int
    height: int


def timeline(events: Sequence[StoredEvent]) -> Timeline:
    """Events placed by Agora's send time (arrival time when it has none), one lane per
    kind, so a gap in the uploads or an error next to them shows at a glance."""
    times = [_time(e) for e in events]
    start, end = (min(times), max(times)) if times else (0, 0)
    span = max(end - start, 1)
    lanes = tuple((name, (n + 0.5) * LANE_HEIGHT) for n, name in enumerate(LANES))
    lane_y = dict(lanes)
    marks = []
    for event, at in zip(events, times, strict=True):
        lane = _LANE_OF.get(event.event_type, "other")
        known = EventType.known(event.event_type)
        marks.append(Mark(
            x=round(TIMELINE_LEFT + (at - start) / span * TIMELINE_WIDTH, 1),
            y=lane_y[lane], lane=lane,
            label=EventType(event.event_type).msg_name if known else f"type {event.event_type}",
            sequence=event.sequence, at_ms=at, flag=_flag(event, lane),
        ))  # fmt: skip
    return Timeline(
        marks=tuple(marks), lanes=lanes, start_ms=start, end_ms=end,
        width=TIMELINE_LEFT + TIMELINE_WIDTH + 20, height=len(LANES) * LANE_HEIGHT + 20,
    )  # fmt: skip


def _time(event: StoredEvent) -> int:
    return event.sendts if event.sendts is not None else event.received_ms


def _flag(event: StoredEvent, lane: str) -> str:
    if event.errors or lane == "problems" or _upload_failed(event):
        return "problem"
    return "copy" if event.redundant_of else ""


def _upload_failed(event: StoredEvent) -> bool:
    if event.event_type not in (EventType.UPLOADED, EventType.BACKUPED):
        return False
    details = event.document.get("payload", {}).get("details", {})
    return isinstance(details, dict) and details.get("status") not in (None, 0)
