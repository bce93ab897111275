"""Element timestamps from the event's own time field."""

from __future__ import annotations

from typing import Any, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import TimestampedValue

from transforms import metrics

__all__ = ["WithEventTime", "StampEventTimeFn", "EventTimeOf"]


class WithEventTime(beam.PTransform):
    """Stamp each event with its event time (a TIMESTAMP field, epoch seconds)."""

    def __init__(self, field: str) -> None:
        super().__init__()
        self._field = field

    def expand(self, events: beam.PCollection) -> beam.PCollection:
        return events | "StampEventTime" >> beam.ParDo(StampEventTimeFn(self._field))


class StampEventTimeFn(beam.DoFn):
    """Event → TimestampedValue; the gauge tells a progress line how far a replay has come."""

    def __init__(self, field: str) -> None:
        self._field = field
        self._position = Metrics.gauge(metrics.NAMESPACE, metrics.EVENT_TIME_POSITION)

    def process(self, event: dict[str, Any]):
        timestamp = event[self._field]
        self._position.set(int(timestamp))
        yield TimestampedValue(event, timestamp)


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
        import json

        from transforms.schema import parse_timestamp

        payload = record.payload
        try:
            if not isinstance(payload, dict):
                payload = json.loads(payload)
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
