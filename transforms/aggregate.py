"""Aggregate events per window and group key into rows that carry their window and pane.

Sums and means are accumulated exactly and rounded once at the end, so the result does not depend
on the order in which a runner merges accumulators: batch, streaming and every runner produce
bit-identical floats. Every finite float is an integer multiple of 2**-1074 (the smallest
subnormal), so an exact sum is that integer: a Python int adds it about 9x faster than a Fraction
(0.3 against 2.6 us), and int / int rounds correctly, as float(Fraction) does.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import time
import zlib
from typing import Any, Iterator, Optional, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.coders import PickleCoder
from apache_beam.transforms import window
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.utils.windowed_value import PaneInfoTiming, WindowedValue, create

from kappaflow.core import metrics
from kappaflow.core.schema import Schema
from transforms.windowing import ParDoInWindows, WindowConfig, WindowsOf

__all__ = ["Metric", "AggregateCombineFn", "AggregatePerWindow", "PartiallyAggregateFn", "ShardPanesFn",
           "CountAndFormatRowsFn"]

# Shards of the step that counts aggregated records (see CountAndFormatRowsFn).
_ROW_SHARDS = 16

KINDS = ("count", "distinct", "sum", "min", "max", "mean", "percentile")


@dataclasses.dataclass(frozen=True)
class Metric:
    """One output column: `kind` of `field` (count needs no field; percentile needs `q` in (0, 1])."""

    name: str
    kind: str
    field: Optional[str] = None
    q: Optional[float] = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"metric {self.name}: kind must be one of {KINDS}")
        if self.kind != "count" and not self.field:
            raise ValueError(f"metric {self.name}: {self.kind} needs a field")
        if (self.kind == "percentile") != (self.q is not None):
            raise ValueError(f"metric {self.name}: q is for percentiles, and percentiles need it")
        if self.q is not None and not 0 < self.q <= 1:
            raise ValueError(f"metric {self.name}: q must be in (0, 1]")


_SUBNORMAL_BITS = 1074


def _exact(value: float) -> int:
    """`value` in units of 2**-1074, exactly (floats and ints have power-of-two denominators)."""
    numerator, denominator = value.as_integer_ratio()
    return numerator << (_SUBNORMAL_BITS + 1 - denominator.bit_length())


def _rounded(units: int, count: int = 1) -> float:
    """units * 2**-1074 / count, correctly rounded."""
    return units / (count << _SUBNORMAL_BITS)


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: always an observed value, so exact and order-independent."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


class AggregateCombineFn(beam.CombineFn):
    """Accumulator: one slot per metric (count, set, exact sum, min, max, [exact sum, n], values)."""

    def __init__(self, metric_specs: Sequence[Metric]) -> None:
        self._metrics = tuple(metric_specs)

    def create_accumulator(self) -> list:
        return [self._empty(m) for m in self._metrics] + [0]  # the last slot counts records

    @staticmethod
    def records(acc: list) -> int:
        """How many records the accumulator holds."""
        return acc[-1]

    @staticmethod
    def _empty(m: Metric) -> Any:
        return {"count": 0, "distinct": set(), "sum": 0, "min": None, "max": None,
                "mean": [0, 0], "percentile": []}[m.kind]

    def add_input(self, acc: list, event: dict) -> list:
        acc[-1] += 1
        for i, m in enumerate(self._metrics):
            kind = m.kind
            if kind == "count":
                acc[i] += 1
                continue
            value = event.get(m.field)
            if value is None:
                continue
            if kind == "distinct":
                acc[i].add(value)
            elif kind == "sum":
                acc[i] += _exact(value)
            elif kind == "min":
                acc[i] = value if acc[i] is None else min(acc[i], value)
            elif kind == "max":
                acc[i] = value if acc[i] is None else max(acc[i], value)
            elif kind == "mean":
                acc[i][0] += _exact(value)
                acc[i][1] += 1
            else:
                acc[i].append(value)
        return acc

    def merge_accumulators(self, accumulators: Any) -> Optional[list]:
        accumulators = iter(accumulators)
        merged = next(accumulators, None)
        if merged is None:
            # An empty pane: Flink's GroupByKey fires some (e.g. an on-time pane of a window
            # whose records all came as late firings). It carries no records: see extract_output.
            return None
        for acc in accumulators:
            merged[-1] += acc[-1]
            for i, m in enumerate(self._metrics):
                kind = m.kind
                if kind in ("count", "sum"):
                    merged[i] += acc[i]
                elif kind == "distinct":
                    merged[i] |= acc[i]
                elif kind in ("min", "max"):
                    if merged[i] is None or (acc[i] is not None and (
                            acc[i] < merged[i] if kind == "min" else acc[i] > merged[i])):
                        merged[i] = acc[i]
                elif kind == "mean":
                    merged[i] = [merged[i][0] + acc[i][0], merged[i][1] + acc[i][1]]
                else:
                    merged[i] = merged[i] + acc[i]
        return merged

    def extract_output(self, acc: Optional[list]) -> Optional[dict]:
        if acc is None:
            return None  # an empty pane: nothing to write (it would overwrite a row with zeros)
        out = {}
        for i, m in enumerate(self._metrics):
            value = acc[i]
            if m.kind == "distinct":
                value = len(value)
            elif m.kind == "sum":
                value = _rounded(value)
            elif m.kind == "mean":
                value = _rounded(*value) if value[1] else None
            elif m.kind == "percentile":
                value = _percentile(sorted(value), m.q) if value else None
            out[m.name] = value
        return out


class PartiallyAggregateFn(beam.DoFn):
    """Combiner lifting by hand: per bundle, one accumulator per (window, group key), so the shuffle
    and the trigger machinery behind it see a few partial aggregates instead of every event. Runners
    lift combiners themselves only where the trigger allows it, and not across every runner.

    Each partial carries the earliest timestamp of its events, so it holds the watermark no later
    than they would have. At most `max_groups` partials are kept: memory does not grow with input.
    An event goes into the windows `windows` gives for its timestamp (the step is its own WindowInto).
    """

    def __init__(self, key_fields: Sequence[str], combine_fn: "AggregateCombineFn", windows: WindowsOf,
                 max_groups: int = 20000) -> None:
        self._key_fields = tuple(key_fields)
        self._combine_fn = combine_fn
        self._windows = windows
        self._max_groups = max_groups

    def setup(self) -> None:
        fields = self._key_fields  # itemgetter: a quarter of the cost of a tuple from a generator
        self._key_of = operator.itemgetter(*fields) if len(fields) > 1 else (lambda event: (event[fields[0]],))

    def start_bundle(self) -> None:
        self._partials: dict[tuple, list] = {}

    def process(self, event: dict, windowed=beam.DoFn.WindowedValueParam) -> Iterator[WindowedValue]:
        key = self._key_of(event)
        micros = windowed.timestamp_micros
        for window in self._windows.at_micros(micros, event):
            slot = self._partials.get((window, key))
            if slot is None:
                slot = self._partials[(window, key)] = [self._combine_fn.create_accumulator(), micros]
            elif micros < slot[1]:
                slot[1] = micros
            self._combine_fn.add_input(slot[0], event)
        if len(self._partials) >= self._max_groups:
            yield from self._flush()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        yield from self._flush()

    def _flush(self) -> Iterator[WindowedValue]:
        partials, self._partials = self._partials, {}
        for (window, key), (accumulator, micros) in partials.items():
            yield create((key, accumulator), micros, (window,))


class MergePartialsFn(beam.CombineFn):
    """The CombineFn behind the shuffle: its inputs are PartiallyAggregateFn's accumulators."""

    def __init__(self, combine_fn: "AggregateCombineFn") -> None:
        self._combine_fn = combine_fn

    def create_accumulator(self) -> Optional[list]:
        return None

    def add_input(self, accumulator: Optional[list], partial: list) -> list:
        # Merging mutates its first argument: never the partial, an input a runner may still hold.
        if accumulator is None:
            accumulator = self._combine_fn.create_accumulator()
        return self._combine_fn.merge_accumulators([accumulator, partial])

    def merge_accumulators(self, accumulators: Any) -> Optional[list]:
        present = [acc for acc in accumulators if acc is not None]
        return self._combine_fn.merge_accumulators(present) if present else None

    def extract_output(self, accumulator: Optional[list]) -> Optional[list]:
        return accumulator  # rows are made (and records counted) by CountAndFormatRowsFn


class ShardPanesFn(beam.DoFn):
    """(group key, accumulator) in its window and pane → (shard, pane) in the global window: the
    window and pane travel in the element, to a stateful step keyed by a few shards."""

    def __init__(self, shards: int) -> None:
        self._shards = shards

    def process(
        self, element: tuple[tuple, Optional[list]], window=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam,
    ) -> Iterator[tuple[int, tuple]]:
        key, accumulator = element  # accumulator None: an empty pane, still counted as a pane
        shard = zlib.crc32(repr(key).encode("utf-8")) % self._shards
        yield shard, (key, accumulator, window.start.micros, window.end.micros, pane.index, pane.timing, pane.is_last)


class CountAndFormatRowsFn(beam.DoFn):
    """(shard, pane of a (window, group key)) → output row with window bounds, pane timing and index.

    This is where records count as aggregated: the records in what the aggregation emitted. Panes
    of an accumulating window repeat the earlier records, so each shard remembers, per (window,
    group key) still firing, the most records a pane held: its cost is per key group, not per
    event. A record dropped anywhere before this step is never counted, and the run's accounting
    shows it. A runner may hand a window's panes over out of order (Prism does): a window is
    forgotten once all its panes came, which the last one's index tells.

    The memory is keyed by a few shards in the global window rather than by (window, group key):
    Prism runs a stateful stage key by key, and a state cell per window and group key cost it about
    1.4 ms of CPU per pane (half of its CPU in a 100k-event replay).
    """

    COUNTED = ReadModifyWriteStateSpec("counted", PickleCoder())

    _TIMING = {
        PaneInfoTiming.EARLY: "EARLY",
        PaneInfoTiming.ON_TIME: "ON_TIME",
        PaneInfoTiming.LATE: "LATE",
        PaneInfoTiming.UNKNOWN: "ON_TIME",  # batch: the one and only pane
    }

    def __init__(self, key_fields: Sequence[str], combine_fn: "AggregateCombineFn", accumulating: bool) -> None:
        self._key_fields = tuple(key_fields)
        self._combine_fn = combine_fn
        self._accumulating = accumulating
        self._aggregated = Metrics.counter(metrics.NAMESPACE, metrics.AGGREGATED)

    def start_bundle(self) -> None:
        # Within a bundle only this DoFn changes a shard's memory: read it once per shard and bundle
        # (a portable runner answers every read with a round trip).
        self._memory: dict[int, dict] = {}

    def process(self, element: tuple[int, tuple], counted=beam.DoFn.StateParam(COUNTED)) -> Iterator[dict]:
        shard, (key, accumulator, start, end, index, timing, is_last) = element
        records = 0 if accumulator is None else self._combine_fn.records(accumulator)
        if self._accumulating:
            records = self._newly_counted(shard, counted, (start, key), records, index, is_last)
        self._aggregated.inc(records)
        if accumulator is not None:  # an empty pane writes nothing (it would overwrite a row with zeros)
            row = {"window_start": start / 1e6, "window_end": end / 1e6}
            row.update(zip(self._key_fields, key))
            row.update(self._combine_fn.extract_output(accumulator))
            row["pane_timing"] = self._TIMING[timing]
            row["pane_index"] = index
            row["updated_at"] = time.time()
            yield row

    def _newly_counted(self, shard: int, counted, window_key: tuple, records: int, index: int, is_last: bool) -> int:
        """Records of this pane that no earlier-counted pane of its window held."""
        memory = self._memory.get(shard)
        if memory is None:
            memory = self._memory[shard] = counted.read() or {}
        most, seen, panes = memory.get(window_key) or (0, 0, None)
        seen += 1
        if is_last:
            panes = index + 1
        if panes is not None and seen >= panes:
            memory.pop(window_key, None)  # every pane of the window is here: none follows
        else:
            memory[window_key] = (max(most, records), seen, panes)
        counted.write(memory)
        return max(records - most, 0)


class AggregatePerWindow(beam.PTransform):
    """Timestamped events → one row per (window, group key) and pane."""

    def __init__(
        self, key_fields: Sequence[str], metric_specs: Sequence[Metric], config: WindowConfig,
        table: Optional[Schema] = None,
    ) -> None:
        super().__init__()
        if not key_fields:
            raise ValueError("AggregatePerWindow needs at least one key field")
        self._key_fields = tuple(key_fields)
        self._metrics = tuple(metric_specs)
        self._config = config
        if table is not None:  # the rows' table: its fields and the metric names must agree
            table.check_filled_by(self.output_columns, "AggregatePerWindow")

    @property
    def output_columns(self) -> tuple[str, ...]:
        """The fields of every row (CountAndFormatRowsFn)."""
        return ("window_start", "window_end", *self._key_fields, *(m.name for m in self._metrics),
                "pane_timing", "pane_index", "updated_at")

    def expand(self, events: beam.PCollection) -> beam.PCollection:
        combine_fn = AggregateCombineFn(self._metrics)
        windowing = self._config.windowing()
        return (
            events
            | "AggregatePartially" >> ParDoInWindows(
                PartiallyAggregateFn(self._key_fields, combine_fn, WindowsOf(windowing.windowfn)), windowing)
            | "MergePartials" >> beam.CombinePerKey(MergePartialsFn(combine_fn))
            | "ShardPanes" >> beam.ParDo(ShardPanesFn(_ROW_SHARDS)).with_output_types(beam.typehints.Tuple[int, Any])
            | "GlobalWindow" >> beam.WindowInto(window.GlobalWindows())
            | "CountAndFormatRows" >> beam.ParDo(
                CountAndFormatRowsFn(self._key_fields, combine_fn, self._config.accumulating))
        )
