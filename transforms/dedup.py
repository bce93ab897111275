"""Deduplicate events by key within event-time buckets of the horizon, the same in batch and streaming.

Copies of a key are duplicates when their event times fall in the same bucket: `horizon_seconds`
long, aligned to the Unix epoch. A bucket is a window, so the runner drops a key's state when the
watermark passes the bucket's end plus `allowed_lateness_seconds`, without a timer per key; and the
answer does not depend on how far apart the copies arrived, so batch, a replay and a live job agree
on copies farther apart than the horizon (they are distinct events, unless they share a bucket).
Re-deliveries, the usual source of duplicates, carry the same event time and always share one.

The first copy to reach the dedup is kept; the others are counted as duplicates. Records must be
routed for lateness before this step (RouteTooLateRecords): a record whose bucket has expired
would be dropped here silently.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

import apache_beam as beam
from apache_beam.coders import BooleanCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms import window
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.utils.timestamp import Duration

from transforms import metrics

__all__ = ["DedupConfig", "DeduplicateEvents", "DeduplicateFn"]


@dataclasses.dataclass(frozen=True)
class DedupConfig:
    """`allowed_lateness_seconds`: how long after its end a bucket still recognises copies; at least
    the aggregation's window size plus its state retention, so that nothing the late-data router
    lets through finds its bucket gone."""

    horizon_seconds: float = 3600.0
    allowed_lateness_seconds: float = 3600.0

    def __post_init__(self) -> None:
        if self.horizon_seconds <= 0:
            raise ValueError("dedup horizon_seconds must be > 0")
        if self.allowed_lateness_seconds < 0:
            raise ValueError("dedup allowed_lateness_seconds must be >= 0")


class DeduplicateFn(beam.DoFn):
    """(key, event) in a bucket window → the key's first event; later ones are counted."""

    SEEN = ReadModifyWriteStateSpec("seen", BooleanCoder())

    def __init__(self) -> None:
        self._duplicates = Metrics.counter(metrics.NAMESPACE, metrics.DUPLICATES)

    def process(self, element: beam.typehints.Tuple[str, Any], seen=beam.DoFn.StateParam(SEEN)) -> Iterator[dict]:
        if seen.read():
            self._duplicates.inc()
        else:
            seen.write(True)
            yield element[1]


class DeduplicateEvents(beam.PTransform):
    """Events → events with duplicates (same key, same horizon bucket) removed and counted."""

    def __init__(self, key: Callable[[dict], str], config: DedupConfig = DedupConfig()) -> None:
        super().__init__()
        self._key = key
        self._config = config

    def expand(self, events: beam.PCollection) -> beam.PCollection:
        original = events.windowing
        return (
            events
            | "KeyByDedupKey" >> beam.Map(lambda e, key=self._key: (key(e), e))
            .with_output_types(beam.typehints.Tuple[str, Any])
            | "HorizonBuckets" >> beam.WindowInto(
                window.FixedWindows(self._config.horizon_seconds),
                allowed_lateness=Duration.of(self._config.allowed_lateness_seconds))
            | "DropDuplicates" >> beam.ParDo(DeduplicateFn())
            # The buckets are this step's business: later steps see the windows they were given.
            | "RestoreWindows" >> beam.WindowInto(
                original.windowfn, trigger=original.triggerfn, accumulation_mode=original.accumulation_mode,
                timestamp_combiner=original.timestamp_combiner, allowed_lateness=original.allowed_lateness)
        )
