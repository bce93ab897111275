"""Route records that are too late for every window they belong to into the dead letters.

Beam's GroupByKey drops such records and only bumps a counter. Python DoFns cannot read the
watermark, so the router learns it from event-time timers: one timer per window deadline
(window end + allowed lateness). A fired timer proves the watermark passed that deadline; a
pending one holds the router's output watermark, so the GroupByKey downstream cannot expire a
window whose records the router let through. Routing is sharded (not per group key) so that a
quiet key still learns the watermark from its busy neighbours.
"""

from __future__ import annotations

import zlib
from typing import Any, Callable, Iterator

import apache_beam as beam
from apache_beam.coders import FloatCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import WindowFn
from apache_beam.utils.timestamp import Timestamp

from transforms import metrics
from transforms.records import DEAD_LETTER_TAG, dead_letter
from transforms.windowing import WindowConfig

__all__ = ["RouteTooLateRecords", "RouteTooLateFn"]


class RouteTooLateFn(beam.DoFn):
    PASSED_DEADLINE = ReadModifyWriteStateSpec("passed_deadline", FloatCoder())
    DEADLINE = TimerSpec("deadline", TimeDomain.WATERMARK)

    def __init__(self, window_fn: WindowFn, allowed_lateness: float, pipeline: str, id_field: str):
        self._window_fn = window_fn
        self._lateness = allowed_lateness
        self._pipeline = pipeline
        self._id_field = id_field
        self._too_late = Metrics.counter(metrics.NAMESPACE, metrics.TOO_LATE)
        self._partly_late = Metrics.counter(metrics.NAMESPACE, "too_late_for_some_windows")

    def start_bundle(self) -> None:
        # Setting a timer is an output to the runner: set each (shard, deadline) once per bundle.
        self._timers_set: set[tuple[int, float]] = set()

    def process(
        self,
        element: tuple[int, dict],
        timestamp=beam.DoFn.TimestampParam,
        passed=beam.DoFn.StateParam(PASSED_DEADLINE),
        deadline_timer=beam.DoFn.TimerParam(DEADLINE),
    ) -> Iterator[Any]:
        shard, event = element
        windows = self._window_fn.assign(WindowFn.AssignContext(timestamp, element=event))
        passed_deadline = passed.read()
        open_deadlines = []
        for w in windows:
            deadline = w.max_timestamp().micros / 1e6 + self._lateness
            if passed_deadline is None or deadline > passed_deadline:
                open_deadlines.append(deadline)
        if not open_deadlines:
            self._too_late.inc()
            missed = max(windows, key=lambda w: w.start)
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER_TAG,
                dead_letter(
                    self._pipeline, "late",
                    f"event time {timestamp.to_rfc3339()} is too late for window "
                    f"[{missed.start.to_rfc3339()}, {missed.end.to_rfc3339()}): the watermark passed "
                    f"its end + allowed lateness ({self._lateness:g}s)",
                    event, event_id=event.get(self._id_field),
                    event_time=timestamp.micros / 1e6, window_start=missed.start.micros / 1e6,
                ),
            )
            return
        if len(open_deadlines) < len(windows):
            self._partly_late.inc()
        for deadline in open_deadlines:
            if (shard, deadline) not in self._timers_set:
                self._timers_set.add((shard, deadline))
                deadline_timer.set(Timestamp.of(deadline), dynamic_timer_tag=repr(deadline))
        yield event

    @on_timer(DEADLINE)
    def deadline_passed(
        self, fired=beam.DoFn.TimestampParam, passed=beam.DoFn.StateParam(PASSED_DEADLINE)
    ) -> None:
        fired_seconds = fired.micros / 1e6
        current = passed.read()
        if current is None or fired_seconds > current:
            passed.write(fired_seconds)


class RouteTooLateRecords(beam.PTransform):
    """Timestamped events → (events in time for at least one window, too-late dead letters)."""

    def __init__(
        self,
        config: WindowConfig,
        pipeline: str,
        id_field: str,
        shard_key: Callable[[dict], str],
        shards: int = 16,
    ) -> None:
        super().__init__()
        if shards < 1:
            raise ValueError("shards must be >= 1")
        self._config = config
        self._pipeline = pipeline
        self._id_field = id_field
        self._shard_key = shard_key
        self._shards = shards

    def expand(self, events: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        shard_key, shards = self._shard_key, self._shards
        return (
            events
            | "ShardByGroupKey" >> beam.WithKeys(
                lambda e: zlib.crc32(shard_key(e).encode("utf-8")) % shards
            ).with_output_types(beam.typehints.Tuple[int, Any])
            | "RouteTooLate" >> beam.ParDo(
                RouteTooLateFn(
                    self._config.window_fn(), self._config.allowed_lateness_seconds,
                    self._pipeline, self._id_field,
                )
            ).with_outputs(DEAD_LETTER_TAG, main="events")
        )
