"""Deduplicate events by key within an event-time horizon, the same in batch and streaming."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

import apache_beam as beam
from apache_beam.coders import FloatCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from transforms import metrics

__all__ = ["DedupConfig", "DeduplicateEvents", "DeduplicateFn"]


@dataclasses.dataclass(frozen=True)
class DedupConfig:
    horizon_seconds: float = 3600.0

    def __post_init__(self) -> None:
        if self.horizon_seconds <= 0:
            raise ValueError("dedup horizon_seconds must be > 0")


class DeduplicateFn(beam.DoFn):
    """Keeps the first copy of each key; forgets the key `horizon` after the LARGEST event time
    seen for it. Beam's DeduplicatePerKey anchors expiry at the first copy, so in a replay a copy
    that arrives first but is older in event time would expire early and let later copies through.
    """

    MAX_SEEN = ReadModifyWriteStateSpec("max_event_time", FloatCoder())
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, horizon_seconds: float) -> None:
        self._horizon = horizon_seconds
        self._duplicates = Metrics.counter(metrics.NAMESPACE, metrics.DUPLICATES)

    def process(
        self,
        element: beam.typehints.Tuple[str, Any],
        timestamp=beam.DoFn.TimestampParam,
        max_seen=beam.DoFn.StateParam(MAX_SEEN),
        expiry=beam.DoFn.TimerParam(EXPIRY),
    ) -> Iterator[dict]:
        _, event = element
        event_time = timestamp.micros / 1e6
        seen = max_seen.read()
        if seen is None or event_time > seen:
            max_seen.write(event_time)
            expiry.set(Timestamp.of(event_time + self._horizon))
        if seen is None:
            yield event
        else:
            self._duplicates.inc()

    @on_timer(EXPIRY)
    def expire(self, max_seen=beam.DoFn.StateParam(MAX_SEEN)) -> None:
        max_seen.clear()


class DeduplicateEvents(beam.PTransform):
    """Events → events with duplicates (same key) removed and counted."""

    def __init__(self, key: Callable[[dict], str], config: DedupConfig = DedupConfig()) -> None:
        super().__init__()
        self._key = key
        self._config = config

    def expand(self, events: beam.PCollection) -> beam.PCollection:
        return (
            events
            | "KeyByDedupKey" >> beam.Map(lambda e, key=self._key: (key(e), e))
            .with_output_types(beam.typehints.Tuple[str, Any])
            | "DropDuplicates" >> beam.ParDo(DeduplicateFn(self._config.horizon_seconds))
        )
