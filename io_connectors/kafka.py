"""Kafka: a live source of RawRecords through Beam's own Java KafkaIO (`apache_beam.io.kafka`).

`--input=kafka://HOST:PORT[,HOST:PORT]/TOPIC[,TOPIC]` names the bootstrap servers and topics;
`--kafka_consumer_group` and `--kafka_config=KEY=VALUE,...` (SASL/SSL settings, `auto.offset.reset`,
...) go to the consumer. The read is expanded by the Java expansion service that
kappaflow/java_services.py starts, and runs in Java SDK workers (EXTERNAL environment): on Prism
and Flink. The Python DirectRunner cannot run a Java transform.

Each Kafka record becomes a RawRecord whose payload is the record value (JSON: the pipelines'
parsers validate it), whose origin is `kafka:TOPIC/PARTITION@OFFSET` and whose ingest time is the
record's Kafka timestamp, or, with an ingest-time field (IoT `--ingest_time_field`, for gateways
that stamp the payload), that payload field, as for files: a record without it has no ingest time.

Time. Event time is read from the payload downstream, as for every source (WithEventTime; IoT after
its clock-skew rule, which compares the device time with the ingest time above). The Kafka
timestamp only drives the watermark, through KafkaIO's CreateTime policy: per partition it is the
largest record timestamp seen, never ahead of the wall clock. So the record timestamp must be a
time the events trail by no more than the allowed lateness: the event time (clickstream collectors;
Debezium sets the change time) or the time a gateway sent the reading (IoT: Kafka producers' default
send time, never a device clock, which may be days off). Idle partitions: a partition with no
backlog advances its watermark to the wall clock, so a quiet partition never holds the job's windows
open; the cost is that a record arriving later on that partition with an older timestamp is late.
Records behind their partition's watermark are judged by `--allowed_lateness_seconds` like any other
late record. (Reads bounded by `--kafka_max_records` are bounded sources: the watermark only moves
at their end, so nothing in them is late.)

Offsets. With `--kafka_consumer_group` the consumer commits the offsets it has polled (Kafka's
`enable.auto.commit`, every `auto.commit.interval.ms`, 5 s by default), so a new job in the group
resumes near where the last one stopped; where no offset is committed it starts at
`auto.offset.reset`, which we default to `earliest` (the whole retained topic) rather than Kafka's
`latest`. KafkaIO's commit when a checkpoint is finalized (`commit_offset_in_finalize`) would be
exact, but Beam 2.70 runs it on neither portable runner: Prism refuses its @RequiresStableInput
step (`beam:requirement:pardo:stable_input:v1`), and Flink fails at the first completed
checkpoint ("State backend must be locked when retrieving the current key", in
BufferingDoFnRunner.checkpointCompleted). Exactly-once across a restart comes from the runner
instead: on Flink the read's offsets are part of every checkpoint and savepoint, and a job
restored from one (a restarted task, `--savepoint_path`) reads on from there.

Tombstones. A record with a null value is Kafka's tombstone (Debezium sends one after each delete,
for log compaction); it carries no change, so it is counted (`kafka_tombstones`) and dropped here.

Writing (`--alerts_topic=kafka://HOST:PORT/TOPIC`): `WriteKafkaMessages` sends dicts as JSON values
through Beam's Java `WriteToKafka`, keyed by their id field: every pane of an alert lands on one
partition, not necessarily in pane order (panes leave in different bundles), so consumers keep
the record with the highest `pane_index` per key. The producer gets the URL's
servers and the security settings (security.*, sasl.*, ssl.*) of `--kafka_config`. A send that
fails fails the bundle, which the runner retries: there are no per-message dead letters.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Iterator, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics

from io_connectors.files import lift_ingest_time
from io_connectors.pubsub import json_message, timestamp_fields
from kappaflow.core import metrics
from kappaflow.core.records import RawRecord
from kappaflow.core.schema import Schema

__all__ = [
    "KafkaReadConfig", "KafkaRecordToRawRecordFn", "KafkaWriteConfig", "ReadKafkaRecords", "WriteKafkaMessages",
    "check_kafka", "is_kafka_url", "parse_kafka_config", "shared_security_settings",
]

SCHEME = "kafka://"
TOMBSTONES = "kafka_tombstones"
_SERVER = r"[A-Za-z0-9_.\-\[\]:]+:[0-9]+"
_TOPIC = r"[A-Za-z0-9._\-]+"
_URL = re.compile(rf"^kafka://(?P<servers>{_SERVER}(,{_SERVER})*)/(?P<topics>{_TOPIC}(,{_TOPIC})*)$")
# Settings the read owns: set through the URL and --kafka_consumer_group, not --kafka_config.
_OWNED = {"bootstrap.servers": "the kafka:// URL", "group.id": "--kafka_consumer_group",
          "key.deserializer": "the read (bytes)", "value.deserializer": "the read (bytes)"}
# Consumer settings the alerts producer shares: how to reach and authenticate to the cluster.
_SHARED_PREFIXES = ("security.", "sasl.", "ssl.")


def is_kafka_url(url: Optional[str]) -> bool:
    return bool(url) and url.startswith(SCHEME)


def parse_kafka_config(text: Optional[str]) -> tuple[tuple[str, str], ...]:
    """`KEY=VALUE,KEY=VALUE` → pairs, in order. A value may contain `=`; none may contain `,`."""
    pairs = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--kafka_config: {item!r} is not KEY=VALUE")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


def shared_security_settings(consumer_config: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """The consumer settings a producer to the same cluster needs too: how to reach and authenticate."""
    return tuple((k, v) for k, v in consumer_config if k.startswith(_SHARED_PREFIXES))


@dataclasses.dataclass(frozen=True)
class KafkaReadConfig:
    """Where to read and how; validated here, before any job starts."""

    url: str
    consumer_group: Optional[str] = None
    consumer_config: tuple[tuple[str, str], ...] = ()
    # Tests and demos only: stop after this many records / seconds (KafkaIO then reads through its
    # bounded UnboundedSource wrapper, and the job ends like a batch job).
    max_records: Optional[int] = None
    max_read_seconds: Optional[int] = None
    # A Java worker pool already running (e.g. next to each TaskManager of a remote Flink cluster).
    java_worker_pool: Optional[str] = None
    # worker pool -> address of Beam's Java expansion service; the runtime supplies the one it runs
    # (kappaflow/java_services.py), so the connector never starts processes itself.
    expansion_service: Optional[Callable[[Optional[str]], str]] = None
    # Top-level payload field holding the ingest time (IoT gateways); None: the Kafka timestamp.
    ingest_time_field: Optional[str] = None

    def __post_init__(self) -> None:
        if not _URL.match(self.url):
            raise ValueError(f"--input={self.url}: expected kafka://HOST:PORT[,HOST:PORT]/TOPIC[,TOPIC]")
        for key, _ in self.consumer_config:
            if key in _OWNED:
                raise ValueError(f"--kafka_config: {key} is set by {_OWNED[key]}")
        if self.consumer_group is not None and not self.consumer_group.strip():
            raise ValueError("--kafka_consumer_group: empty group id")
        for name, bound in (("max_records", self.max_records), ("max_read_seconds", self.max_read_seconds)):
            if bound is not None and bound < 1:
                raise ValueError(f"{name} must be >= 1")

    @property
    def bootstrap_servers(self) -> str:
        return _URL.match(self.url).group("servers")

    @property
    def topics(self) -> list[str]:
        return _URL.match(self.url).group("topics").split(",")

    def consumer_properties(self) -> dict[str, str]:
        properties = {"bootstrap.servers": self.bootstrap_servers, "auto.offset.reset": "earliest"}
        if self.consumer_group:
            properties.update({"group.id": self.consumer_group, "enable.auto.commit": "true"})
        properties.update(self.consumer_config)
        return properties


class KafkaRecordToRawRecordFn(beam.DoFn):
    """A KafkaIO record with metadata (a Row) → RawRecord; tombstones (null values) are counted and dropped.
    The ingest time is the Kafka timestamp, or the payload's `ingest_time_field` when one is named."""

    def __init__(self, ingest_time_field: Optional[str] = None) -> None:
        self._ingest_time_field = ingest_time_field
        self._tombstones = Metrics.counter(metrics.NAMESPACE, TOMBSTONES)

    def process(self, record: Any) -> Iterator[RawRecord]:
        if record.value is None:
            self._tombstones.inc()
        else:
            stamp = record.timestamp / 1000.0 if record.timestamp is not None and record.timestamp >= 0 else None
            raw = RawRecord(record.value, f"kafka:{record.topic}/{record.partition}@{record.offset}", stamp)
            yield raw if self._ingest_time_field is None else lift_ingest_time(raw, self._ingest_time_field)


class ReadKafkaRecords(beam.PTransform):
    """Kafka topics → unbounded PCollection of RawRecords (bounded with max_records/max_read_seconds)."""

    def __init__(self, config: KafkaReadConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        from apache_beam.io.kafka import ReadFromKafka

        config = self._config
        if config.expansion_service is None:
            raise ValueError(f"--input={config.url}: a Kafka read needs Beam's Java expansion service")
        return (
            pbegin
            | "ReadFromKafka" >> ReadFromKafka(
                consumer_config=config.consumer_properties(),
                topics=config.topics,
                with_metadata=True,
                timestamp_policy=ReadFromKafka.create_time_policy,
                commit_offset_in_finalize=False,  # see Offsets above
                max_num_records=config.max_records,
                max_read_time=config.max_read_seconds,
                expansion_service=config.expansion_service(config.java_worker_pool))
            | "ToRawRecords" >> beam.ParDo(KafkaRecordToRawRecordFn(config.ingest_time_field))
        )


@dataclasses.dataclass(frozen=True)
class KafkaWriteConfig:
    """Where to write: one topic (`kafka://HOST:PORT[,HOST:PORT]/TOPIC`) and the producer's settings."""

    url: str
    producer_config: tuple[tuple[str, str], ...] = ()
    java_worker_pool: Optional[str] = None
    expansion_service: Optional[Callable[[Optional[str]], str]] = None  # as KafkaReadConfig's

    def __post_init__(self) -> None:
        match = _URL.match(self.url)
        if not match or "," in match.group("topics"):
            raise ValueError(f"{self.url}: expected kafka://HOST:PORT[,HOST:PORT]/TOPIC (one topic)")

    @property
    def topic(self) -> str:
        return _URL.match(self.url).group("topics")

    def producer_properties(self) -> dict[str, str]:
        return {"bootstrap.servers": _URL.match(self.url).group("servers"), **dict(self.producer_config)}


class ToKafkaRecordFn(beam.DoFn):
    """dict → (key, JSON value) bytes for WriteToKafka; the key is the element's `key_field`."""

    def __init__(self, key_field: str, timestamps: tuple[str, ...]) -> None:
        self._key_field = key_field
        self._timestamps = timestamps

    def process(self, element: dict) -> Iterator[tuple[bytes, bytes]]:
        yield str(element[self._key_field]).encode("utf-8"), json_message(element, self._timestamps)


class WriteKafkaMessages(beam.PTransform):
    """Dicts → JSON records on a Kafka topic, keyed by `key_field` (Beam's Java WriteToKafka)."""

    def __init__(self, config: KafkaWriteConfig, key_field: str, schema: Optional[Schema] = None) -> None:
        super().__init__()
        self._config = config
        self._fn = ToKafkaRecordFn(key_field, timestamp_fields(schema))

    def expand(self, elements: beam.PCollection) -> beam.pvalue.PDone:
        from apache_beam.io.kafka import WriteToKafka

        config = self._config
        if config.expansion_service is None:
            raise ValueError(f"{config.url}: a Kafka write needs Beam's Java expansion service")
        return (
            elements
            | "ToKafkaRecords" >> beam.ParDo(self._fn).with_output_types(tuple[bytes, bytes])
            | "WriteToKafka" >> WriteToKafka(
                producer_config=config.producer_properties(), topic=config.topic,
                expansion_service=config.expansion_service(config.java_worker_pool))
        )


def check_kafka(url: str) -> None:
    """At least one bootstrap server of `url` accepts a connection (the consumer finds the rest)."""
    import socket

    servers = _URL.match(url).group("servers").split(",") if _URL.match(url) else []
    errors = []
    for server in servers:
        host, _, port = server.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
                return
        except OSError as err:
            errors.append(f"{server}: {err.strerror or err}")
    raise ConnectionError(f"Kafka at {','.join(servers) or url} is not reachable ({'; '.join(errors) or 'bad URL'})")
