"""Clock skew: trust the ingest time over a device clock that is missing or too far off.

Sensors without NTP drift. When a source knows when a record was ingested (Pub/Sub publish time, an
ingest-time column of a file), a device time that is missing or further than `max_skew_seconds`
from it is replaced by the ingest time; the record is flagged and counted. Without an ingest time
the device time is all there is and is kept; a record with neither is a dead letter.

The same rule gives the replay source its event time (`SkewCorrectedEventTime`), so the replay
watermark follows the corrected times the windows will see: a device clock a day ahead must not
push the watermark a day ahead.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics

from kappaflow.core import metrics
from kappaflow.core.records import DEAD_LETTER_TAG, Rejection
from kappaflow.core.schema import parse_timestamp

__all__ = ["ClockSkewConfig", "corrected_time", "CorrectClockSkew", "CorrectClockSkewFn",
           "SkewCorrectedEventTime", "INGEST_TIME"]

# Where ParseEventFn puts RawRecord.ingest_time.
INGEST_TIME = "_ingest_time"


@dataclasses.dataclass(frozen=True)
class ClockSkewConfig:
    max_skew_seconds: float = 300.0
    time_field: str = "timestamp"

    def __post_init__(self) -> None:
        if self.max_skew_seconds < 0:
            raise ValueError("max_skew_seconds must be >= 0")


def corrected_time(
    device_time: Optional[float], ingest_time: Optional[float], max_skew_seconds: float
) -> tuple[Optional[float], bool]:
    """(event time, whether the ingest time replaced the device time); (None, False) if neither."""
    if ingest_time is None:
        return device_time, False
    if device_time is None or abs(device_time - ingest_time) > max_skew_seconds:
        return ingest_time, True
    return device_time, False


class CorrectClockSkewFn(beam.DoFn):
    """Event → event with `time_field` corrected, `device_timestamp` (what the device said),
    `ingest_time` and `clock_corrected`; no time at all → dead letter."""

    def __init__(self, config: ClockSkewConfig) -> None:
        self._config = config
        self._corrected = Metrics.counter(metrics.NAMESPACE, metrics.CLOCK_CORRECTED)
        self._invalid = Metrics.counter(metrics.NAMESPACE, metrics.INVALID)

    def process(self, event: dict) -> Iterator[Any]:
        field = self._config.time_field
        device_time, ingest_time = event.get(field), event.get(INGEST_TIME)
        time, corrected = corrected_time(device_time, ingest_time, self._config.max_skew_seconds)
        out = {k: v for k, v in event.items() if k != INGEST_TIME}
        if time is None:
            self._invalid.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, Rejection(
                "clock", f"field {field}: missing, and the source knows no ingest time", out))
        else:
            if corrected:
                self._corrected.inc()
            out.update({field: time, "device_timestamp": device_time, "ingest_time": ingest_time,
                        "clock_corrected": corrected})
            yield out


class CorrectClockSkew(beam.PTransform):
    """Parsed events (with their ingest time, if any) → (events with a trusted time, dead letters)."""

    def __init__(self, config: ClockSkewConfig) -> None:
        super().__init__()
        self._fn = CorrectClockSkewFn(config)

    def expand(self, events: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return events | "Correct" >> beam.ParDo(self._fn).with_outputs(DEAD_LETTER_TAG, main="events")


class SkewCorrectedEventTime:
    """RawRecord → the event time CorrectClockSkew will give it (None when it has none): the replay
    source's event-time function, so watermark and element timestamps agree."""

    def __init__(self, config: ClockSkewConfig) -> None:
        self._config = config

    def __call__(self, record: Any) -> Optional[float]:
        from transforms.parse import decode_record

        device_time: Optional[float] = None
        try:
            payload = decode_record(record.payload)
            value = payload.get(self._config.time_field)
            if value not in (None, ""):
                device_time = parse_timestamp(value)
        except (ValueError, TypeError, AttributeError):
            # Unparseable: the parser will dead-letter the record; until then it needs a time.
            return record.ingest_time
        return corrected_time(device_time, record.ingest_time, self._config.max_skew_seconds)[0]
