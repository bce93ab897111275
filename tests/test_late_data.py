"""RouteTooLateRecords + AggregatePerWindow on the streaming DirectRunner, driven by TestStream."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import BeamAssertException, assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from kappaflow.core.records import DEAD_LETTER_TAG, SOURCE_WATERMARK
from transforms.aggregate import AggregatePerWindow, Metric
from transforms.late_data import RouteTooLateRecords
from transforms.windowing import WindowConfig

METRICS = (Metric("events", "count"), Metric("total", "sum", "value"))


def event(event_id: str, t: float, value: float = 1.0, page: str = "home") -> TimestampedValue:
    return TimestampedValue({"event_id": event_id, "page": page, "value": value, "t": t}, t)


def route_and_aggregate(events, config: WindowConfig):
    routed = events | RouteTooLateRecords(config, shard_key=lambda e: e["page"], shards=4)
    rows = routed.events | AggregatePerWindow(("page",), METRICS, config)
    return rows, routed[DEAD_LETTER_TAG]


def row_summary(row: dict) -> tuple:
    return (row["window_start"], row["window_end"], row["page"], row["events"], row["total"],
            row["pane_timing"], row["pane_index"])


def dead_letters_are(expected: list[tuple]):
    """expected: (stage, reason substring, event_id, window_start)."""

    def check(actual):
        got = sorted((r.stage, r.reason, r.element["event_id"], r.window_start) for r in actual)
        want = sorted(expected, key=lambda e: e[2])
        if len(got) != len(want) or not all(
                g[0] == w[0] and w[1] in g[1] and g[2] == w[2] and g[3] == w[3]
                for g, w in zip(sorted(got, key=lambda g: g[2]), want)):
            raise BeamAssertException(f"dead letters {got} do not match {want}")

    return check


def test_on_time_late_and_too_late(run_streaming, count_of):
    config = WindowConfig(size_seconds=60, allowed_lateness_seconds=120, early_firing_seconds=None)
    stream = (
        TestStream()
        .add_elements([event("e1", 10, 1.0), event("e2", 20, 2.0)])
        .advance_watermark_to(60)                       # window [0, 60) closes: ON_TIME pane
        .add_elements([event("e3", 30, 3.0)])           # late, within lateness: LATE pane
        .advance_watermark_to(200)                      # past 60 + 120: [0, 60) is closed for good
        .add_elements([event("e4", 40, 4.0)])           # too late: dead letter
        .advance_watermark_to_infinity()
    )

    def build(p):
        rows, dead = route_and_aggregate(p | stream, config)
        assert_that(rows | beam.Map(row_summary), equal_to([
            (0.0, 60.0, "home", 2, 3.0, "ON_TIME", 0),
            (0.0, 60.0, "home", 3, 6.0, "LATE", 1),       # accumulating: includes e1, e2
        ]), label="rows")
        assert_that(dead, dead_letters_are([("late", "too late for window", "e4", 0.0)]),
                    label="dead")

    result = run_streaming(build)
    assert count_of(result, "too_late") == 1
    assert count_of(result, "records_aggregated") == 3


def test_discarding_mode_late_pane_has_only_new_records(run_streaming):
    config = WindowConfig(size_seconds=60, allowed_lateness_seconds=120, early_firing_seconds=None,
                          accumulating=False)
    stream = (
        TestStream()
        .add_elements([event("e1", 10, 1.0), event("e2", 20, 2.0)])
        .advance_watermark_to(60)
        .add_elements([event("e3", 30, 3.0)])
        .advance_watermark_to_infinity()
    )

    def build(p):
        rows, _ = route_and_aggregate(p | stream, config)
        assert_that(rows | beam.Map(row_summary), equal_to([
            (0.0, 60.0, "home", 2, 3.0, "ON_TIME", 0),
            (0.0, 60.0, "home", 1, 3.0, "LATE", 1),
        ]))

    run_streaming(build)


def test_too_late_dead_letter_names_the_latest_missed_window(run_streaming, count_of):
    # Sliding 60/30: t=50 belongs to [0, 60) and [30, 90); both closed → window_start 30.
    config = WindowConfig(kind="sliding", size_seconds=60, period_seconds=30,
                          allowed_lateness_seconds=0, early_firing_seconds=None)
    stream = (
        TestStream()
        .add_elements([event("e1", 55)])
        .advance_watermark_to(200)
        .add_elements([event("late", 50)])
        .advance_watermark_to_infinity()
    )

    def build(p):
        _, dead = route_and_aggregate(p | stream, config)
        assert_that(dead, dead_letters_are([("late", "allowed lateness (0s)", "late", 30.0)]))

    result = run_streaming(build)
    assert count_of(result, "too_late") == 1


def test_session_windows_merge_and_aggregate(run_streaming):
    config = WindowConfig(kind="session", size_seconds=30, allowed_lateness_seconds=0,
                          early_firing_seconds=None)
    stream = (
        TestStream()
        .add_elements([event("a1", 10, 1.0), event("a2", 30, 2.0), event("b1", 12, 5.0, page="cart")])
        .add_elements([event("a3", 50, 4.0), event("a4", 200, 8.0)])
        .advance_watermark_to_infinity()
    )

    def build(p):
        rows, _ = route_and_aggregate(p | stream, config)
        assert_that(rows | beam.Map(row_summary), equal_to([
            (10.0, 80.0, "home", 3, 7.0, "ON_TIME", 0),   # 10, 30, 50 merge (gap 30)
            (200.0, 230.0, "home", 1, 8.0, "ON_TIME", 0),
            (12.0, 42.0, "cart", 1, 5.0, "ON_TIME", 0),
        ]))

    run_streaming(build)


def test_sliding_windows_count_a_record_in_each_window(run_streaming):
    config = WindowConfig(kind="sliding", size_seconds=60, period_seconds=30,
                          allowed_lateness_seconds=0, early_firing_seconds=None)
    stream = (
        TestStream()
        .add_elements([event("e1", 45, 1.0), event("e2", 70, 10.0)])
        .advance_watermark_to_infinity()
    )

    def build(p):
        rows, _ = route_and_aggregate(p | stream, config)
        assert_that(rows | beam.Map(row_summary), equal_to([
            (0.0, 60.0, "home", 1, 1.0, "ON_TIME", 0),
            (30.0, 90.0, "home", 2, 11.0, "ON_TIME", 0),
            (60.0, 120.0, "home", 1, 10.0, "ON_TIME", 0),
        ]))

    run_streaming(build)


def test_early_pane_fires_on_processing_time(run_streaming):
    config = WindowConfig(size_seconds=60, allowed_lateness_seconds=0, early_firing_seconds=30)
    stream = (
        TestStream()
        .add_elements([event("e1", 10, 1.0)])
        .advance_processing_time(31)                    # 30 s after the pane's first element
        .add_elements([event("e2", 20, 2.0)])
        .advance_watermark_to(60)
        .advance_watermark_to_infinity()
    )

    def build(p):
        rows, _ = route_and_aggregate(p | stream, config)
        assert_that(rows | beam.Map(row_summary), equal_to([
            (0.0, 60.0, "home", 1, 1.0, "EARLY", 0),
            (0.0, 60.0, "home", 2, 3.0, "ON_TIME", 1),
        ]))

    run_streaming(build)


def test_too_late_record_for_a_window_the_shard_never_saw_is_dead_lettered(run_streaming, count_of):
    config = WindowConfig(size_seconds=60, allowed_lateness_seconds=60, early_firing_seconds=None)
    stream = (
        TestStream()
        .add_elements([event("e1", 10)])
        .advance_watermark_to(1000)   # far past [60, 120) + lateness + retention margin (240)
        .add_elements([event("lost", 100)])
        .advance_watermark_to_infinity()
    )

    def build(p):
        rows, dead = route_and_aggregate(p | stream, config)
        assert_that(rows | beam.Map(row_summary), equal_to([
            (0.0, 60.0, "home", 1, 1.0, "ON_TIME", 0),
        ]), label="rows")
        assert_that(dead, dead_letters_are([("late", "too late", "lost", 60.0)]), label="dead")

    result = run_streaming(build)
    assert count_of(result, "too_late") == 1


def test_a_record_behind_its_sources_watermark_is_too_late_before_any_timer_fires(run_streaming, count_of):
    # A replay stamps each record with its file's watermark (RawRecord.watermark): no timer has
    # fired yet when "old" arrives, but the source had moved past [0, 60) + lateness long before.
    config = WindowConfig(size_seconds=60, allowed_lateness_seconds=60, early_firing_seconds=None)

    def from_replay(event_id: str, t: float, watermark: float) -> TimestampedValue:
        value = event(event_id, t)
        return TimestampedValue({**value.value, SOURCE_WATERMARK: watermark}, t)

    stream = (
        TestStream()
        .add_elements([event("e1", 1000), from_replay("e2", 1010, 990), from_replay("old", 10, 990)])
        .advance_watermark_to_infinity()
    )

    def build(p):
        routed = p | stream | RouteTooLateRecords(config, shard_key=lambda e: e["page"], shards=4)
        assert_that(routed.events | beam.Map(lambda e: (e["event_id"], SOURCE_WATERMARK in e)),
                    equal_to([("e1", False), ("e2", False)]), label="events")
        assert_that(routed[DEAD_LETTER_TAG], dead_letters_are([("late", "too late", "old", 0.0)]), label="dead")

    result = run_streaming(build)
    assert count_of(result, "too_late") == 1


@pytest.mark.parametrize("size, offset", [(60, 0), (60, 7), (0.5, 0.25), (3600, 0)])
def test_fixed_window_deadlines_are_what_beam_assigns(size, offset):
    from apache_beam.transforms.window import FixedWindows, WindowFn
    from apache_beam.utils.timestamp import Timestamp

    from transforms.late_data import TooLateJudge

    judge = TooLateJudge(FixedWindows(size, offset), 30.0)
    for micros in (0, 1, 59_999_999, 60_000_000, 1_705_322_445_123_456, -1, -60_000_001):
        ts = Timestamp(micros=micros)
        windows = FixedWindows(size, offset).assign(WindowFn.AssignContext(ts))
        assert judge.deadlines(ts, {}) == [w.max_timestamp().micros / 1e6 + 30.0 for w in windows], micros
