"""Element timestamps from the event's own time field."""

from __future__ import annotations

from typing import Any, Optional

import apache_beam as beam
from apache_beam.transforms.window import TimestampedValue

__all__ = ["WithEventTime", "EventTimeOf"]


class WithEventTime(beam.PTransform):
    """Stamp each event with its event time (a TIMESTAMP field, epoch seconds)."""

    def __init__(self, field: str) -> None:
        super().__init__()
        self._field = field

    def expand(self, events: beam.PCollection) -> beam.PCollection:
        field = self._field

        def stamp(event: dict[str, Any]) -> TimestampedValue:
            return TimestampedValue(event, event[field])

        return events | "StampEventTime" >> beam.Map(stamp)


class EventTimeOf:
    """RawRecord → its event time (epoch seconds) read from `field`, or None when unreadable.

    Used by sources that must know event time before parsing (the replay watermark); the parser
    still validates the field and dead-letters what this returns None for.
    """

    def __init__(self, field: str) -> None:
        self._field = field

    def __call__(self, record: Any) -> Optional[float]:
        import json

        from transforms.schema import parse_timestamp

        payload = record.payload
        try:
            if not isinstance(payload, dict):
                payload = json.loads(payload)
            return parse_timestamp(payload[self._field])
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
