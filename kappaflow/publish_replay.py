"""Publish historical files to a Pub/Sub topic, paced by event time: how a live streaming job is
fed a replay.

    python -m kappaflow.publish_replay --input='events/*.jsonl' --topic=projects/P/topics/T \
        [--speedup=60 | --speedup=1 | --speedup=max] [--time_field=timestamp] [--id_field=event_id]

Records are published in file order. Each message carries the record as it was read (JSON) and
the attributes `event_time` (the original event time, RFC 3339: run the pipeline with
`--timestamp_attribute=event_time`) and the id field's value. A record whose time is unreadable
carries the event time of the readable record before it (after it, for those at the start): Beam's
Java Pub/Sub read (Prism, Flink), like Dataflow's, fails on a message without the attribute; the
pipeline still dead-letters the record for its own unreadable time. With `--speedup=N` a record whose
event time is T seconds after the first record's is published T/N seconds after the start; `max`
publishes as fast as Pub/Sub takes them. Progress goes to stderr. `PUBSUB_EMULATOR_HOST` points
it at an emulator.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import Callable, Iterable, Optional, Sequence, TextIO

from io_connectors.files import expand_pattern, read_all
from kappaflow.core.records import RawRecord
from kappaflow.core.schema import format_timestamp
from transforms.event_time import EventTimeOf

__all__ = ["ReplayPace", "publish_replay", "main"]

EVENT_TIME_ATTRIBUTE = "event_time"


@dataclasses.dataclass(frozen=True)
class ReplayPace:
    """Event-time seconds per wall-clock second; None: as fast as possible."""

    speedup: Optional[float]

    def __post_init__(self) -> None:
        if self.speedup is not None and self.speedup <= 0:
            raise ValueError("speedup must be > 0 (or 'max')")

    @classmethod
    def parse(cls, text: str) -> "ReplayPace":
        return cls(None if text.strip().lower() in ("max", "0", "inf") else float(text))

    def due(self, first_event_time: float, event_time: float) -> float:
        """Seconds after the start at which a record with this event time is published."""
        if self.speedup is None:
            return 0.0
        return max(0.0, (event_time - first_event_time) / self.speedup)


def _message(record: RawRecord, event_time: Optional[float], id_field: Optional[str]) -> tuple[bytes, dict]:
    payload = record.payload
    attributes = {}
    if event_time is not None:
        attributes[EVENT_TIME_ATTRIBUTE] = format_timestamp(event_time)
    if isinstance(payload, dict):  # CSV, Avro, Parquet rows
        data = json.dumps(payload, sort_keys=True, default=str).encode("utf-8")
        record_id = payload.get(id_field) if id_field else None
    else:
        data = payload if isinstance(payload, bytes) else str(payload).encode("utf-8")
        try:
            decoded = json.loads(data)
            record_id = decoded.get(id_field) if id_field and isinstance(decoded, dict) else None
        except ValueError:
            record_id = None  # published as it is: the pipeline dead-letters it
    if isinstance(record_id, str) and record_id:
        attributes[id_field] = record_id
    return data, attributes


def publish_replay(
    records: Iterable[RawRecord],
    publish: Callable[[bytes, dict], object],
    event_time: Callable[[RawRecord], Optional[float]],
    pace: ReplayPace,
    id_field: Optional[str] = None,
    progress: TextIO = sys.stderr,
    progress_every_seconds: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Publish every record at its paced moment; returns how many were published.

    `publish(data, attributes)` returns a future; all are awaited before returning, so a failure
    raises instead of being lost.
    """
    started = clock()
    first: Optional[float] = None
    futures = []
    last_report = started
    latest: Optional[float] = None
    previous: Optional[float] = None  # the last readable event time: a stand-in for unreadable ones
    held: list[RawRecord] = []  # unreadable records before the first readable one wait for its time
    for record in records:
        ts = event_time(record)
        if ts is None and previous is None:
            held.append(record)
            continue
        if ts is not None:
            first = ts if first is None else first
            wait = started + pace.due(first, ts) - clock()
            if wait > 0:
                sleep(wait)
            latest = ts if latest is None else max(latest, ts)
            previous = ts
        for waiting in held:
            futures.append(publish(*_message(waiting, previous, id_field)))
        held.clear()
        futures.append(publish(*_message(record, previous, id_field)))
        now = clock()
        if now - last_report >= progress_every_seconds:
            _report(progress, len(futures), now - started, latest)
            last_report = now
    futures.extend(publish(*_message(record, None, id_field)) for record in held)  # no readable time at all
    for future in futures:
        future.result(timeout=60)
    _report(progress, len(futures), clock() - started, latest, done=True)
    return len(futures)


def _report(out: TextIO, count: int, seconds: float, latest: Optional[float], done: bool = False) -> None:
    rate = count / seconds if seconds > 0 else 0.0
    reached = format_timestamp(latest) if latest is not None else "-"
    print(f"{'published' if done else 'publishing'}: {count:,} messages in {seconds:.1f}s "
          f"({rate:,.0f}/s), event time reached {reached}", file=out, flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="Files: glob(s), comma-separated (any input format).")
    parser.add_argument("--topic", required=True, help="projects/PROJECT/topics/NAME")
    parser.add_argument("--speedup", default="1", help="1 (real time), 60, ... or max")
    parser.add_argument("--time_field", default="timestamp", help="Payload field with the event time.")
    parser.add_argument("--id_field", default="event_id", help="Payload field copied to an attribute.")
    args = parser.parse_args(argv)

    from google.cloud import pubsub_v1

    from io_connectors.pubsub import check_topic

    pace = ReplayPace.parse(args.speedup)
    try:
        check_topic(args.topic)
    except ConnectionError as err:
        raise SystemExit(f"publish_replay: {err}") from None
    client = pubsub_v1.PublisherClient()
    try:
        publish_replay(
            read_all(expand_pattern(args.input)),
            lambda data, attributes: client.publish(args.topic, data, **attributes),
            EventTimeOf(args.time_field), pace, args.id_field,
        )
    finally:
        client.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
