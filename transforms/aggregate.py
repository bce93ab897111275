"""Aggregate events per window and group key into rows that carry their window and pane.

Sums and means are accumulated as exact fractions and rounded once at the end, so the result
does not depend on the order in which a runner merges accumulators: batch, streaming and every
runner produce bit-identical floats.
"""

from __future__ import annotations

import dataclasses
import math
import time
from fractions import Fraction
from typing import Any, Callable, Iterator, Optional, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils.windowed_value import PaneInfoTiming

from transforms import metrics
from transforms.windowing import WindowConfig

__all__ = ["Metric", "AggregateCombineFn", "AggregatePerWindow"]

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


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: always an observed value, so exact and order-independent."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


class AggregateCombineFn(beam.CombineFn):
    """Accumulator: one slot per metric (count, set, Fraction, min, max, [sum, n], values)."""

    def __init__(self, metric_specs: Sequence[Metric]) -> None:
        self._metrics = tuple(metric_specs)

    def create_accumulator(self) -> list:
        return [self._empty(m) for m in self._metrics]

    @staticmethod
    def _empty(m: Metric) -> Any:
        return {"count": 0, "distinct": set(), "sum": Fraction(0), "min": None, "max": None,
                "mean": [Fraction(0), 0], "percentile": []}[m.kind]

    def add_input(self, acc: list, event: dict) -> list:
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
                acc[i] += Fraction(value)
            elif kind == "min":
                acc[i] = value if acc[i] is None else min(acc[i], value)
            elif kind == "max":
                acc[i] = value if acc[i] is None else max(acc[i], value)
            elif kind == "mean":
                acc[i][0] += Fraction(value)
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
                value = float(value)
            elif m.kind == "mean":
                value = float(value[0] / value[1]) if value[1] else None
            elif m.kind == "percentile":
                value = _percentile(sorted(value), m.q) if value else None
            out[m.name] = value
        return out


class FormatWindowRowFn(beam.DoFn):
    """(group key, metrics) → output row with window bounds, pane timing and index."""

    _TIMING = {
        PaneInfoTiming.EARLY: "EARLY",
        PaneInfoTiming.ON_TIME: "ON_TIME",
        PaneInfoTiming.LATE: "LATE",
        PaneInfoTiming.UNKNOWN: "ON_TIME",  # batch: the one and only pane
    }

    def __init__(self, key_fields: Sequence[str]) -> None:
        self._key_fields = tuple(key_fields)

    def process(
        self, element: tuple[tuple, dict], window=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam
    ) -> Iterator[dict]:
        key, values = element
        if values is None:
            return []  # an empty pane (see AggregateCombineFn.extract_output)
        row = {"window_start": window.start.micros / 1e6, "window_end": window.end.micros / 1e6}
        row.update(zip(self._key_fields, key))
        row.update(values)
        row["pane_timing"] = self._TIMING[pane.timing]
        row["pane_index"] = pane.index
        row["updated_at"] = time.time()
        return [row]


class AggregatePerWindow(beam.PTransform):
    """Timestamped events → one row per (window, group key) and pane."""

    def __init__(
        self, key_fields: Sequence[str], metric_specs: Sequence[Metric], config: WindowConfig
    ) -> None:
        super().__init__()
        if not key_fields:
            raise ValueError("AggregatePerWindow needs at least one key field")
        self._key_fields = tuple(key_fields)
        self._metrics = tuple(metric_specs)
        self._config = config
        self._aggregated = Metrics.counter(metrics.NAMESPACE, metrics.AGGREGATED)

    def expand(self, events: beam.PCollection) -> beam.PCollection:
        key_fields = self._key_fields
        aggregated = self._aggregated

        def keyed(event: dict) -> tuple[tuple, dict]:
            aggregated.inc()
            return tuple(event[f] for f in key_fields), event

        return (
            events
            | "Window" >> self._config.window_into()
            | "KeyByGroup" >> beam.Map(keyed)
            | "Aggregate" >> beam.CombinePerKey(AggregateCombineFn(self._metrics))
            | "FormatRows" >> beam.ParDo(FormatWindowRowFn(key_fields))
        )
