"""Keep records out of the statistics on purpose, and count them: they are neither errors (dead
letters) nor lost; the accounting has a category of their own (`records_excluded`)."""

from __future__ import annotations

from typing import Callable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

from kappaflow.core import metrics

__all__ = ["ExcludeRecords", "CountExcludedFn"]


class CountExcludedFn(beam.DoFn):
    def __init__(self, keep: Callable[[dict], bool]) -> None:
        self._keep = keep
        self._excluded = Metrics.counter(metrics.NAMESPACE, metrics.EXCLUDED)

    def process(self, event: dict) -> Iterator[dict]:
        if self._keep(event):
            yield event
        else:
            self._excluded.inc()


class ExcludeRecords(beam.PTransform):
    """Events → the events `keep` accepts; the others are counted as excluded."""

    def __init__(self, keep: Callable[[dict], bool]) -> None:
        super().__init__()
        self._keep = keep

    def expand(self, events: beam.PCollection) -> beam.PCollection:
        return events | "Exclude" >> beam.ParDo(CountExcludedFn(self._keep))
