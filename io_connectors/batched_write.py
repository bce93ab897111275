"""What the batched sinks share: collect elements, write them every `batch_size` and at the end of
the bundle, and pass on the dead letters of what could not be written; and what a sink counts."""

from __future__ import annotations

import time
from typing import Any, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from kappaflow.core import metrics
from kappaflow.core.records import DEAD_LETTER_TAG

__all__ = ["WriteInBatchesFn", "SinkCounters"]


class SinkCounters:
    """What a sink counts: the rows it wrote (under `written`: rows_written, alerts_written, ...),
    the rows the target refused (each a dead letter), and the retries of failed writes."""

    def __init__(self, written: str = metrics.ROWS_WRITTEN) -> None:
        self.written = Metrics.counter(metrics.NAMESPACE, written)
        self.rejected = Metrics.counter(metrics.NAMESPACE, metrics.ROWS_REJECTED_BY_SINK)
        self.retries = Metrics.counter(metrics.NAMESPACE, metrics.SINK_RETRIES)


class WriteInBatchesFn(beam.DoFn):
    """Subclasses implement `write_batch(elements)`, yielding a TaggedOutput dead letter for each
    element that could not be written."""

    def __init__(self, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self._batch_size = batch_size

    def write_batch(self, elements: list[Any]) -> Iterator[beam.pvalue.TaggedOutput]:
        raise NotImplementedError

    def start_bundle(self) -> None:
        self._buffer: list[Any] = []

    def process(self, element: Any) -> Iterator[beam.pvalue.TaggedOutput]:
        self._buffer.append(element)
        if len(self._buffer) >= self._batch_size:
            yield from self._write_buffer()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        # finish_bundle has no element window: its dead letters go to the global window, now.
        for letter in self._write_buffer():
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, WindowedValue(letter.value, time.time(), [GlobalWindow()]))

    def _write_buffer(self) -> Iterator[beam.pvalue.TaggedOutput]:
        elements, self._buffer = self._buffer, []
        if elements:
            yield from self.write_batch(elements)
