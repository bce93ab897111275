"""Element timestamps from the event's own time field, within the times a run accepts."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Iterator, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.core import Windowing
from apache_beam.transforms.window import GlobalWindow, GlobalWindows
from apache_beam.utils.windowed_value import create

from kappaflow.core import metrics
from kappaflow.core.records import DEAD_LETTER_TAG, Rejection
from kappaflow.core.schema import MIN_EPOCH_SECONDS, format_timestamp, parse_timestamp
from transforms.parse import decode_record
from transforms.windowing import ParDoInWindows

__all__ = ["EventTimeBounds", "WithEventTime", "StampEventTimeFn", "EventTimeOf", "DEFAULT_MAX_FUTURE_SECONDS"]

# A day: more than any time zone mistake (±14 h) or device clock drift we correct, far less than
# the wrong-year and wrong-unit clocks that would move a streaming watermark past everything else.
DEFAULT_MAX_FUTURE_SECONDS = 86400.0


@dataclasses.dataclass(frozen=True)
class EventTimeBounds:
    """Event times a run accepts: from 1970 (the parser rejects earlier ones) to
    `max_future_seconds` past the wall clock when the record is processed."""

    max_future_seconds: float = DEFAULT_MAX_FUTURE_SECONDS

    def __post_init__(self) -> None:
        if not math.isfinite(self.max_future_seconds) or self.max_future_seconds < 0:
            raise ValueError(f"--max_future_seconds must be a finite number >= 0, got {self.max_future_seconds}")

    def problem(self, seconds: Optional[float], now: float) -> Optional[str]:
        """Why `seconds` is not an acceptable event time, or None."""
        if seconds is None:
            return "missing"
        if seconds < MIN_EPOCH_SECONDS:
            return f"{seconds!r} is before 1970"
        if seconds > now + self.max_future_seconds:
            return (f"{format_timestamp(seconds)} is more than {self.max_future_seconds:g} s in the future "
                    f"(--max_future_seconds)")
        return None

    def guard(self, event_time: Callable[[Any], Optional[float]]) -> Callable[[Any], Optional[float]]:
        """An event-time function (for a replay source) that says None, "unknown", for times
        outside the bounds: one clock years ahead must not move the watermark past all the rest."""
        return _BoundedEventTime(event_time, self)


class _BoundedEventTime:
    def __init__(self, event_time: Callable[[Any], Optional[float]], bounds: EventTimeBounds) -> None:
        self._event_time = event_time
        self._bounds = bounds

    def __call__(self, record: Any) -> Optional[float]:
        seconds = self._event_time(record)
        return None if self._bounds.problem(seconds, time.time()) else seconds


class StampEventTimeFn(beam.DoFn):
    """Event → the event stamped with its `field` (epoch seconds), in the global window; outside
    the bounds → dead letter. A gauge tells a progress line how far a replay has come: it is set
    every GAUGE_EVERY records and at the end of a bundle, with the newest event time seen."""

    GAUGE_EVERY = 1024

    def __init__(self, field: str, bounds: EventTimeBounds) -> None:
        self._field = field
        self._bounds = bounds
        self._invalid = Metrics.counter(metrics.NAMESPACE, metrics.INVALID)
        self._position = Metrics.gauge(metrics.NAMESPACE, metrics.EVENT_TIME_POSITION)

    def start_bundle(self) -> None:
        self._newest = None
        self._unreported = 0

    def process(self, event: dict[str, Any]) -> Iterator[Any]:
        seconds = event.get(self._field)
        problem = self._bounds.problem(seconds, time.time())
        if problem is None:
            if self._newest is None or seconds > self._newest:
                self._newest = seconds
            self._unreported += 1
            if self._unreported >= self.GAUGE_EVERY:
                self._report_position()
            yield create(event, int(seconds * 1000000), [_GLOBAL_WINDOW])  # micros as Timestamp.of has them
        else:
            self._invalid.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, Rejection(
                "event_time", f"field {self._field}: {problem}", event))

    def finish_bundle(self) -> None:
        self._report_position()

    def _report_position(self) -> None:
        if self._newest is not None:
            self._position.set(int(self._newest))
        self._unreported = 0


_GLOBAL_WINDOW = GlobalWindow()


class WithEventTime(beam.PTransform):
    """Events → (events stamped with their event time, a TIMESTAMP field in epoch seconds, in the
    global window; dead letters for times outside `bounds`)."""

    def __init__(self, field: str, bounds: EventTimeBounds = EventTimeBounds()) -> None:
        super().__init__()
        self._fn = StampEventTimeFn(field, bounds)

    def expand(self, events: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return events | "StampEventTime" >> ParDoInWindows(self._fn, Windowing(GlobalWindows())).with_outputs(
            DEAD_LETTER_TAG, main="events")


class EventTimeOf:
    """RawRecord → its event time (epoch seconds) read from the first of `paths` present, or None
    when unreadable. A path is a field name or a dotted path into nested objects
    (`payload.source.ts_ms`), for envelopes that carry the time inside.

    Used by sources that must know event time before parsing (the replay watermark); the parser
    still validates the field and dead-letters what this returns None for.
    """

    def __init__(self, *paths: str) -> None:
        if not paths:
            raise ValueError("EventTimeOf needs at least one field path")
        self._paths = tuple(tuple(path.split(".")) for path in paths)

    def __call__(self, record: Any) -> Optional[float]:
        try:  # what the parser cannot decode has no time
            payload = decode_record(record.payload, hand_over=True)  # the parser takes it next
            for path in self._paths:
                value = _lookup(payload, path)
                if value is not None:
                    return parse_timestamp(value)
        except (ValueError, TypeError):
            pass
        return None


def _lookup(node: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node
