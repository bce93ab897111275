"""Replay historical files as an unbounded stream in event time.

Records are emitted in file order with their event time as element timestamp, and the watermark
follows the largest event time seen minus `max_out_of_orderness`, so the streaming graph fires its
triggers and handles lateness as the live job would.

Two implementations of one contract:
- `ReplayFileFn`, a splittable DoFn with a manual watermark estimator: Prism, Flink, Dataflow.
- A TestStream built from the same reading and the same watermark rule, for Beam's Python
  DirectRunner, whose SDF support holds the output watermark at -inf until a restriction is done
  (apache_beam/runners/direct/sdf_direct_runner.py) and would turn a replay into one final pane.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Iterator, Optional

import apache_beam as beam
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp

from io_connectors.files import expand_pattern, read_records
from transforms.records import RawRecord

__all__ = ["ReplayConfig", "ReplayFiles", "ReplayFileFn", "replay_schedule"]

EventTimeFn = Callable[[RawRecord], Optional[float]]


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
    max_out_of_orderness_seconds: float = 60.0
    chunk_size: int = 500  # records between watermark advances (and SDF checkpoints)

    def __post_init__(self) -> None:
        if self.max_out_of_orderness_seconds < 0:
            raise ValueError("max_out_of_orderness_seconds must be >= 0")
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")


def replay_schedule(
    records: Iterable[RawRecord], event_time: EventTimeFn, config: ReplayConfig
) -> Iterator[tuple[list[TimestampedValue], float]]:
    """Chunks of timestamped records, each followed by the watermark it allows.

    A record whose event time cannot be read is stamped with the largest time seen so far: it
    will be dead-lettered by the parser, and must not count as late meanwhile.
    """
    max_seen: Optional[float] = None
    chunk: list[TimestampedValue] = []
    for record in records:
        ts = event_time(record)
        if ts is None:
            ts = max_seen if max_seen is not None else 0.0
        max_seen = ts if max_seen is None else max(max_seen, ts)
        chunk.append(TimestampedValue(record, ts))
        if len(chunk) >= config.chunk_size:
            yield chunk, max_seen - config.max_out_of_orderness_seconds
            chunk = []
    if chunk and max_seen is not None:
        yield chunk, max_seen - config.max_out_of_orderness_seconds


def read_all(paths: Iterable[str], ingest_time_field: Optional[str] = None) -> Iterator[RawRecord]:
    """The files as one log, in the given (sorted) order: a replay has one arrival order."""
    for path in paths:
        yield from read_records(path, ingest_time_field)


class _RecordCountProvider(RestrictionProvider):
    def initial_restriction(self, paths: tuple[str, ...]) -> OffsetRange:
        return OffsetRange(0, sum(1 for _ in read_all(paths)))

    def create_tracker(self, restriction: OffsetRange) -> OffsetRestrictionTracker:
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, paths: tuple[str, ...], restriction: OffsetRange) -> int:
        return restriction.size()


class ReplayFileFn(beam.DoFn):
    """Splittable DoFn: the files → their records in order, watermark = max event time - bound."""

    def __init__(
        self, event_time: EventTimeFn, config: ReplayConfig, ingest_time_field: Optional[str] = None
    ) -> None:
        self._event_time = event_time
        self._config = config
        self._ingest_time_field = ingest_time_field

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        paths: tuple[str, ...],
        tracker=beam.DoFn.RestrictionParam(_RecordCountProvider()),
        watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider()),
    ) -> Iterator[TimestampedValue]:
        start = tracker.current_restriction().start
        current = watermark.current_watermark()
        # The watermark is max_seen - bound; recover max_seen after a checkpoint from it.
        max_seen = (
            None if current is None or current <= MIN_TIMESTAMP
            else current.micros / 1e6 + self._config.max_out_of_orderness_seconds
        )
        emitted = 0
        for index, record in enumerate(read_all(paths, self._ingest_time_field)):
            if index < start:
                continue
            if emitted >= self._config.chunk_size:
                tracker.defer_remainder()  # let the runner advance the watermark between chunks
                return
            if not tracker.try_claim(index):
                return
            ts = self._event_time(record)
            if ts is None:
                ts = max_seen if max_seen is not None else 0.0
            max_seen = ts if max_seen is None else max(max_seen, ts)
            yield TimestampedValue(record, ts)
            emitted += 1
            proposed = Timestamp.of(max_seen - self._config.max_out_of_orderness_seconds)
            if watermark.current_watermark() is None or proposed > watermark.current_watermark():
                watermark.set_watermark(proposed)
        tracker.try_claim(tracker.current_restriction().stop)  # finished: claim the end


class ReplayFiles(beam.PTransform):
    """Files → unbounded PCollection of RawRecords stamped with event time (streaming replay)."""

    def __init__(
        self, pattern: str, event_time: EventTimeFn, config: ReplayConfig = ReplayConfig(),
        ingest_time_field: Optional[str] = None,
    ):
        super().__init__()
        self._pattern = pattern
        self._event_time = event_time
        self._config = config
        self._ingest_time_field = ingest_time_field

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        paths = expand_pattern(self._pattern)
        if _runs_on_python_direct_runner(pbegin.pipeline):
            return pbegin | "ReplayAsTestStream" >> self._test_stream(paths)
        return (
            pbegin
            | "Paths" >> beam.Create([tuple(paths)])
            | "ReplayFiles" >> beam.ParDo(ReplayFileFn(self._event_time, self._config, self._ingest_time_field))
        )

    def _test_stream(self, paths: list[str]) -> TestStream:
        stream = TestStream()
        previous: Optional[float] = None
        for chunk, watermark in replay_schedule(
                read_all(paths, self._ingest_time_field), self._event_time, self._config):
            stream.add_elements(chunk)
            if previous is not None and watermark <= previous:
                continue  # no new maximum in this chunk: TestStream wants strictly rising watermarks
            stream.advance_watermark_to(watermark)
            # The DirectRunner runs a TestStream on a test clock: move it at the pace of event
            # time (a 1x replay), so processing-time early panes fire as in a live job.
            if previous is not None and watermark > previous:
                millis = int(round((watermark - previous) * 1000))  # TestStream wants whole ms
                if millis:
                    stream.advance_processing_time(Duration(micros=millis * 1000))
            previous = watermark
        return stream.advance_watermark_to_infinity()


def _runs_on_python_direct_runner(pipeline: beam.Pipeline) -> bool:
    runner = type(pipeline.runner).__name__
    return runner in ("DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner")
