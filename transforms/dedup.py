"""Deduplicate events by key within event-time buckets of the horizon, the same in batch and streaming.

Copies of a key are duplicates when their event times fall in the same bucket: `horizon_seconds`
long, aligned to the Unix epoch. A bucket is a window, so the runner drops a key's state when the
watermark passes the bucket's end plus `allowed_lateness_seconds`, without a timer per key; and the
answer does not depend on how far apart the copies arrived, so batch, a replay and a live job agree
on copies farther apart than the horizon (they are distinct events, unless they share a bucket).
Re-deliveries, the usual source of duplicates, carry the same event time and always share one.

Records must be routed for lateness before this step (RouteTooLateRecords): a record whose bucket
has expired would be dropped here silently.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Iterable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger, window
from apache_beam.transforms.core import Windowing
from apache_beam.utils.timestamp import Duration
from apache_beam.utils.windowed_value import WindowedValue, create

from kappaflow.core import metrics
from transforms.windowing import ParDoInWindows, WindowsOf

__all__ = ["DedupConfig", "DeduplicateEvents", "KeepFirstCopyFn", "KeyIntoBucketsFn"]


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


class KeyIntoBucketsFn(beam.DoFn):
    """Event → (its dedup key, (event time in micros, event)), in its horizon bucket."""

    def __init__(self, key: Callable[[dict], str], buckets: WindowsOf) -> None:
        self._key = key
        self._buckets = buckets

    def process(self, event: dict, windowed=beam.DoFn.WindowedValueParam) -> Iterator[WindowedValue]:
        micros = windowed.timestamp_micros
        yield create((self._key(event), (micros, event)), micros, self._buckets.at_micros(micros))


class KeepFirstCopyFn(beam.DoFn):
    """(key, [(event time, event), ...]) per pane → the key's winner in its first pane; every other
    copy is counted as a duplicate.

    The winner of a pane is its copy with the earliest event time, then the smallest content: in
    batch the one pane holds every copy, so the winner does not depend on arrival order or runner.
    A live job emits at once: its first pane holds the copies that had arrived by then. The winner
    goes back to the windows `restore` gives (those the events had before the buckets).
    """

    def __init__(self, restore: WindowsOf) -> None:
        self._restore = restore
        self._duplicates = Metrics.counter(metrics.NAMESPACE, metrics.DUPLICATES)

    def process(self, element: tuple[str, Iterable[tuple[int, Any]]],
                windowed=beam.DoFn.WindowedValueParam) -> Iterator[Any]:
        _, copies = element
        copies = list(copies)
        if windowed.pane_info.index > 0:
            self._duplicates.inc(len(copies))
        elif copies:
            if len(copies) > 1:
                self._duplicates.inc(len(copies) - 1)
            micros, event = min(copies, key=_copy_order) if len(copies) > 1 else copies[0]
            yield create(event, micros, self._restore.at_micros(micros, event))


def _copy_order(copy: tuple[int, Any]) -> tuple[int, str]:
    micros, event = copy
    return micros, json.dumps(event, sort_keys=True, default=str)


class DeduplicateEvents(beam.PTransform):
    """Events → events with duplicates (same key, same horizon bucket) removed and counted.

    The copies meet in the runner's own GroupByKey, which fires a pane per arrival: no user state
    per key (a portable runner answers each state read with a round trip), and the runner drops a
    bucket's keys with the bucket.
    """

    def __init__(self, key: Callable[[dict], str], config: DedupConfig = DedupConfig()) -> None:
        super().__init__()
        self._key = key
        self._config = config

    def expand(self, events: beam.PCollection) -> beam.PCollection:
        original = events.windowing
        buckets = Windowing(
            window.FixedWindows(self._config.horizon_seconds),
            triggerfn=trigger.Repeatedly(trigger.AfterCount(1)),
            accumulation_mode=trigger.AccumulationMode.DISCARDING,
            timestamp_combiner=window.TimestampCombiner.OUTPUT_AT_EARLIEST,
            allowed_lateness=Duration.of(self._config.allowed_lateness_seconds))
        return (
            events
            | "KeyIntoBuckets" >> ParDoInWindows(KeyIntoBucketsFn(self._key, WindowsOf(buckets.windowfn)), buckets)
            | "GroupCopies" >> beam.GroupByKey()
            # The buckets are this step's business: later steps see the windows they were given.
            | "KeepFirstCopy" >> ParDoInWindows(KeepFirstCopyFn(WindowsOf(original.windowfn)), original)
        )
