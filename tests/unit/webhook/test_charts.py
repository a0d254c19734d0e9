"""The dashboard charts' geometry: numbers a template only has to draw."""

from __future__ import annotations

import orjson

from webhook.charts import LANE_HEIGHT, TIMELINE_LEFT, TIMELINE_WIDTH, timeline, traffic_chart
from webhook.store import StoredEvent


def event(
    event_type: int, sendts: int | None, received_ms: int = 0, **extra: object
) -> StoredEvent:
    details = extra.pop("details", {})
    return StoredEvent(
        entry_id="1-0", notice_id="n", event_type=event_type, sequence=1, sendts=sendts,
        received_ms=received_ms, body=orjson.dumps({"payload": {"details": details}}),
        errors=extra.get("errors", {}), redundant_of=extra.get("redundant_of"),  # type: ignore[arg-type]
    )  # fmt: skip


class TestTraffic:
    def test_bars_stack_by_outcome_and_the_tallest_minute_fills_the_height(self):
        chart = traffic_chart([
            (0, {"stored": 30, "duplicate": 10}),
            (60_000, {"stored": 10, "rejected:signature_mismatch": 5,
                      "rejected:body_too_large": 5}),
        ])  # fmt: skip

        assert chart.peak == 40
        first = [b for b in chart.bars if b.minute_ms == 0]
        assert [(b.series, b.height) for b in first] == [("stored", 120.0), ("duplicate", 40.0)]
        assert first[1].y == 0.0
        assert chart.totals == {"stored": 40, "duplicate": 10, "redundant": 0, "rejected": 10}

    def test_a_quiet_hour_draws_no_bars(self):
        chart = traffic_chart([(0, {}), (60_000, {})])

        assert (chart.bars, chart.peak) == ((), 0)


class TestTimeline:
    def test_events_are_placed_by_send_time_in_their_lane(self):
        chart = timeline([event(40, 1_000), event(33, 2_000), event(31, 3_000)])

        assert [m.x for m in chart.marks] == [TIMELINE_LEFT, TIMELINE_LEFT + TIMELINE_WIDTH / 2,
                                              TIMELINE_LEFT + TIMELINE_WIDTH]  # fmt: skip
        assert [m.lane for m in chart.marks] == ["recorder", "uploader", "uploader"]
        assert chart.marks[0].y == 2.5 * LANE_HEIGHT

    def test_arrival_time_stands_in_when_agora_sent_none(self):
        chart = timeline([event(33, None, received_ms=5_000)])

        assert chart.marks[0].at_ms == 5_000

    def test_errors_failed_uploads_and_invalid_events_are_problems(self):
        chart = timeline([
            event(1, 1), event(31, 2, details={"status": 1}), event(31, 3, details={"status": 0}),
            event(33, 4, errors={"details": ["bad"]}), event(33, 5, redundant_of="n0"),
            event(999, 6),
        ])  # fmt: skip

        assert [m.flag for m in chart.marks] == ["problem", "problem", "", "problem", "copy", ""]
        assert chart.marks[-1].lane == "other"
        assert chart.marks[-1].label == "type 999"
