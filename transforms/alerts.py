"""Threshold alerts from per-window rows: one alert per (id fields, window), whatever the pane.

The alert id is the group key plus the window start, so every pane of a window produces the same id:
an upserting sink keeps one alert per window, and a later pane with a higher value updates it.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Iterator, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics

from kappaflow.core import metrics
from kappaflow.core.schema import format_timestamp

__all__ = ["ThresholdAlertConfig", "RaiseThresholdAlerts", "RaiseAlertFn"]


@dataclasses.dataclass(frozen=True)
class ThresholdAlertConfig:
    """Alert when row[`value_field`] > row[`threshold_field`] (rows `applies` to, if given).
    Severity: `critical` at `critical_excess` or more above the threshold, else `warning`."""

    id_fields: tuple[str, ...]
    value_field: str = "max"
    threshold_field: str = "threshold"
    critical_excess: float = 10.0
    applies: Optional[Callable[[dict], bool]] = None

    def __post_init__(self) -> None:
        if not self.id_fields:
            raise ValueError("alerts need at least one id field")
        if self.critical_excess < 0:
            raise ValueError("critical_excess must be >= 0")


class RaiseAlertFn(beam.DoFn):
    def __init__(self, config: ThresholdAlertConfig) -> None:
        self._config = config
        self._raised = Metrics.counter(metrics.NAMESPACE, metrics.ALERTS_RAISED)

    def process(self, row: dict) -> Iterator[dict]:
        c = self._config
        value, threshold = row.get(c.value_field), row.get(c.threshold_field)
        if value is not None and threshold is not None and value > threshold and (
                c.applies is None or c.applies(row)):
            self._raised.inc()
            yield self._alert(row, value, threshold)

    def _alert(self, row: dict, value: float, threshold: float) -> dict:
        c = self._config
        ids = [str(row[f]) for f in c.id_fields]
        return {
            "alert_id": "/".join([*ids, format_timestamp(row["window_start"])]),
            **{f: row[f] for f in c.id_fields},
            "window_start": row["window_start"],
            "window_end": row["window_end"],
            c.value_field: value,
            "threshold": threshold,
            "severity": "critical" if value - threshold >= c.critical_excess else "warning",
            "created_at": time.time(),
            # The pane that raised it: append-only sinks order an alert's rows by it.
            "pane_index": row.get("pane_index"),
            "updated_at": row.get("updated_at"),
        }


class RaiseThresholdAlerts(beam.PTransform):
    """Per-window rows → alerts (see ThresholdAlertConfig)."""

    def __init__(self, config: ThresholdAlertConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        return rows | "Raise" >> beam.ParDo(RaiseAlertFn(self._config))
