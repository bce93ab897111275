"""AggregateCombineFn directly, Metric validation, and AggregatePerWindow in a batch pipeline."""

from __future__ import annotations

import itertools
import random

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from transforms.aggregate import AggregateCombineFn, AggregatePerWindow, Metric
from transforms.windowing import WindowConfig

ALL = (
    Metric("n", "count"),
    Metric("users", "distinct", "user"),
    Metric("total", "sum", "x"),
    Metric("lo", "min", "x"),
    Metric("hi", "max", "x"),
    Metric("avg", "mean", "x"),
    Metric("p50", "percentile", "x", q=0.5),
    Metric("p95", "percentile", "x", q=0.95),
    Metric("p99", "percentile", "x", q=0.99),
)


def combine(fn: AggregateCombineFn, events) -> dict:
    acc = fn.create_accumulator()
    for e in events:
        acc = fn.add_input(acc, e)
    return fn.extract_output(acc)


def combine_in_parts(fn: AggregateCombineFn, parts) -> dict:
    accs = []
    for part in parts:
        acc = fn.create_accumulator()
        for e in part:
            acc = fn.add_input(acc, e)
        accs.append(acc)
    return fn.extract_output(fn.merge_accumulators(accs))


def test_all_metric_kinds():
    events = [{"user": f"u{i % 7}", "x": float(i)} for i in range(1, 101)]  # x = 1..100
    events.append({"user": "u1"})  # no x: counted, ignored by the field metrics
    out = combine(AggregateCombineFn(ALL), events)
    assert out == {"n": 101, "users": 7, "total": 5050.0, "lo": 1.0, "hi": 100.0, "avg": 50.5,
                   "p50": 50.0, "p95": 95.0, "p99": 99.0}


def test_nearest_rank_percentiles_on_small_sets():
    fn = AggregateCombineFn((Metric("p50", "percentile", "x", q=0.5), Metric("p95", "percentile", "x", q=0.95),
                             Metric("p99", "percentile", "x", q=0.99), Metric("p100", "percentile", "x", q=1.0)))
    assert combine(fn, [{"x": v} for v in (40, 10, 30, 20)]) == {"p50": 20, "p95": 40, "p99": 40, "p100": 40}
    assert combine(fn, [{"x": 7}]) == {"p50": 7, "p95": 7, "p99": 7, "p100": 7}


def test_empty_accumulator_output():
    assert combine(AggregateCombineFn(ALL), []) == {
        "n": 0, "users": 0, "total": 0.0, "lo": None, "hi": None, "avg": None,
        "p50": None, "p95": None, "p99": None}


def test_sum_is_exact_and_independent_of_merge_order():
    fn = AggregateCombineFn((Metric("total", "sum", "x"), Metric("avg", "mean", "x")))
    events = [{"x": 0.1}] * 10
    results = set()
    for split in ([10], [1] * 10, [3, 7], [5, 5], [2, 3, 5]):
        parts, start = [], 0
        for size in split:
            parts.append(events[start:start + size])
            start += size
        for order in itertools.permutations(range(len(parts))) if len(parts) <= 3 else [range(len(parts))]:
            out = combine_in_parts(fn, [parts[i] for i in order])
            results.add((out["total"], out["avg"]))
    assert results == {(1.0, 0.1)}  # naive float addition gives 0.9999999999999999


def test_sum_and_mean_equal_the_correctly_rounded_exact_rational_from_subnormals_to_huge():
    from fractions import Fraction

    fn = AggregateCombineFn((Metric("total", "sum", "x"), Metric("avg", "mean", "x")))
    rng = random.Random(11)
    values = [5e-324, -5e-324, 2.2250738585072014e-308, 1e308, -1e308, 1.7976931348623157e308, -1e308, 3, True]
    values += [rng.uniform(-1, 1) * 10.0 ** rng.randint(-320, 300) for _ in range(300)]
    out = combine(fn, [{"x": v} for v in values])
    exact = sum(Fraction(v) for v in values)
    assert out["total"] == float(exact)
    assert out["avg"] == float(exact / len(values))


def test_merge_accumulators_is_order_independent():
    fn = AggregateCombineFn(ALL)
    rng = random.Random(7)
    events = [{"user": rng.choice("abcde"), "x": rng.uniform(-1e6, 1e6)} for _ in range(200)]
    expected = combine(fn, events)
    for seed in range(5):
        shuffled = events[:]
        random.Random(seed).shuffle(shuffled)
        cuts = sorted(random.Random(seed).sample(range(1, 200), 4))
        parts = [shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, 200])]
        assert combine_in_parts(fn, parts) == expected
        assert combine_in_parts(fn, list(reversed(parts))) == expected


def test_merge_handles_empty_accumulators():
    fn = AggregateCombineFn(ALL)
    events = [{"user": "a", "x": 3.0}, {"user": "b", "x": -1.0}]
    expected = combine(fn, events)
    assert combine_in_parts(fn, [[], events, []]) == expected
    assert combine_in_parts(fn, [[], [events[0]], [], [events[1]]]) == expected


@pytest.mark.parametrize("kwargs", [
    dict(name="m", kind="median", field="x"),
    dict(name="m", kind="sum"),
    dict(name="m", kind="percentile", field="x"),
    dict(name="m", kind="sum", field="x", q=0.5),
    dict(name="m", kind="percentile", field="x", q=0.0),
    dict(name="m", kind="percentile", field="x", q=1.5),
])
def test_metric_validation(kwargs):
    with pytest.raises(ValueError):
        Metric(**kwargs)


def test_aggregate_per_window_batch(run_batch, count_of):
    config = WindowConfig(size_seconds=60, early_firing_seconds=None)
    events = [
        TimestampedValue({"page": "home", "user": "u1", "x": 1.0}, 10),
        TimestampedValue({"page": "home", "user": "u2", "x": 2.0}, 59.5),
        TimestampedValue({"page": "home", "user": "u1", "x": 4.0}, 60),
        TimestampedValue({"page": "cart", "user": "u1", "x": 8.0}, 30),
    ]
    metrics = (Metric("events", "count"), Metric("users", "distinct", "user"), Metric("total", "sum", "x"))

    def build(p):
        rows = (p | beam.Create(events)
                | AggregatePerWindow(("page",), metrics, config))
        assert_that(rows | beam.Map(lambda r: (r["window_start"], r["window_end"], r["page"], r["events"],
                                               r["users"], r["total"], r["pane_timing"], r["pane_index"])),
                    equal_to([
                        (0.0, 60.0, "home", 2, 2, 3.0, "ON_TIME", 0),
                        (60.0, 120.0, "home", 1, 1, 4.0, "ON_TIME", 0),
                        (0.0, 60.0, "cart", 1, 1, 8.0, "ON_TIME", 0),
                    ]))

    result = run_batch(build)
    assert count_of(result, "records_aggregated") == 4


def test_aggregate_per_window_needs_key_fields():
    with pytest.raises(ValueError):
        AggregatePerWindow((), (Metric("n", "count"),), WindowConfig())


def test_the_rows_have_exactly_the_declared_output_columns(run_batch):
    aggregate = AggregatePerWindow(("page",), (Metric("events", "count"), Metric("total", "sum", "x")),
                                   WindowConfig(size_seconds=60, early_firing_seconds=None))

    def build(p):
        rows = p | beam.Create([TimestampedValue({"page": "home", "x": 1.0}, 10)]) | aggregate
        assert_that(rows | beam.Map(lambda r: tuple(sorted(r))), equal_to([tuple(sorted(aggregate.output_columns))]))

    run_batch(build)


def test_a_metric_named_differently_from_its_table_column_fails_at_construction():
    from kappaflow.core.schemas.clickstream import CLICKSTREAM_METRICS
    from pipelines import clickstream, iot_sensors

    keys, windows = ("event_type", "country"), WindowConfig()
    AggregatePerWindow(keys, clickstream.METRICS, windows, table=CLICKSTREAM_METRICS)  # the pipeline's own
    renamed = tuple(Metric("purchases", m.kind, m.field) if m.name == "revenue" else m for m in clickstream.METRICS)
    with pytest.raises(ValueError, match="does not produce revenue of table clickstream_metrics"):
        AggregatePerWindow(keys, renamed, windows, table=CLICKSTREAM_METRICS)
    from kappaflow.core.schemas.iot import SENSOR_STATS
    AggregatePerWindow(("device_id",), iot_sensors.METRICS, windows, table=SENSOR_STATS)


class _State:
    """A ReadModifyWrite state cell, as the runner keeps it between bundles."""

    def __init__(self):
        self.value = None

    def read(self):
        return self.value

    def write(self, value):
        self.value = value


@pytest.mark.parametrize("panes, expected", [
    ([(0, 3, True)], 3),                                   # batch: the one pane
    ([(0, 2, False), (1, 5, False), (2, 6, True)], 6),     # early, on time, last
    ([(1, 4, True), (0, 4, False)], 4),                    # Prism: the last pane first
    ([(2, 6, True), (0, 2, False), (1, 5, False)], 6),
    ([(0, None, False), (1, 2, True)], 2),                 # an empty pane (Flink) still counts as a pane
])
def test_count_and_format_counts_each_record_once_and_forgets_a_finished_window(panes, expected):
    from apache_beam.utils.windowed_value import PaneInfoTiming

    from transforms.aggregate import CountAndFormatRowsFn

    combine = AggregateCombineFn((Metric("events", "count"),))

    def accumulator(records):
        return None if records is None else [records, records]

    fn = CountAndFormatRowsFn(("page",), combine, accumulating=True)
    counted, state = [], _State()
    fn._aggregated = type("Counter", (), {"inc": lambda self, n: counted.append(n)})()
    for index, records, is_last in panes:
        fn.start_bundle()  # a bundle per pane: the memory must survive in the state cell
        pane = (("home",), accumulator(records), 0, 60_000_000, index, PaneInfoTiming.LATE, is_last)
        rows = list(fn.process((3, pane), counted=state))
        assert [row["events"] for row in rows] == ([] if records is None else [records])
    assert sum(counted) == expected
    assert state.value == {}  # every pane came: the window is forgotten
