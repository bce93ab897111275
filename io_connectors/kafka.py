"""Kafka: a live source of RawRecords through Beam's own Java KafkaIO (`apache_beam.io.kafka`).

`--input=kafka://HOST:PORT[,HOST:PORT]/TOPIC[,TOPIC]` names the bootstrap servers and topics;
`--kafka_consumer_group` and `--kafka_config=KEY=VALUE,...` (SASL/SSL settings, `auto.offset.reset`,
...) go to the consumer. The read is expanded by the Java expansion service that
kappaflow/java_services.py starts, and runs in Java SDK workers (EXTERNAL environment): on Prism
and Flink. The Python DirectRunner cannot run a Java transform.

Each Kafka record becomes a RawRecord whose payload is the record value (JSON: the pipelines'
parsers validate it), whose origin is `kafka:TOPIC/PARTITION@OFFSET` and whose ingest time is the
record's Kafka timestamp.

Time. Event time is read from the payload downstream, as for every source (WithEventTime). The
watermark comes from KafkaIO's CreateTime policy: per partition it is the largest record timestamp
seen, never ahead of the wall clock, so producers should set the record timestamp to the event
time (Kafka clients set it to the send time by default, Debezium to the change time). Idle
partitions: a partition with no backlog advances its watermark to the wall clock, so a quiet
partition never holds the job's windows open. Records behind their partition's watermark are late
and are judged by `--allowed_lateness_seconds` like any other late record.

Offsets. With `--kafka_consumer_group` the read commits offsets when the runner finalizes a
checkpoint (KafkaIO `commit_offset_in_finalize`), so a new job in the same group resumes after them;
where no offset is committed the consumer starts at `auto.offset.reset`, which we default to
`earliest` (the whole retained topic) rather than Kafka's `latest`.

Tombstones. A record with a null value is Kafka's tombstone (Debezium sends one after each delete,
for log compaction); it carries no change, so it is counted (`kafka_tombstones`) and dropped here.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Iterator, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics

from kappaflow.core import metrics
from kappaflow.core.records import RawRecord

__all__ = [
    "KafkaReadConfig", "KafkaRecordToRawRecordFn", "ReadKafkaRecords", "check_kafka", "is_kafka_url",
    "parse_kafka_config",
]

SCHEME = "kafka://"
TOMBSTONES = "kafka_tombstones"
_SERVER = r"[A-Za-z0-9_.\-\[\]:]+:[0-9]+"
_TOPIC = r"[A-Za-z0-9._\-]+"
_URL = re.compile(rf"^kafka://(?P<servers>{_SERVER}(,{_SERVER})*)/(?P<topics>{_TOPIC}(,{_TOPIC})*)$")
# Settings the read owns: set through the URL and --kafka_consumer_group, not --kafka_config.
_OWNED = {"bootstrap.servers": "the kafka:// URL", "group.id": "--kafka_consumer_group",
          "key.deserializer": "the read (bytes)", "value.deserializer": "the read (bytes)"}


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
            properties["group.id"] = self.consumer_group
        properties.update(self.consumer_config)
        return properties


class KafkaRecordToRawRecordFn(beam.DoFn):
    """A KafkaIO record with metadata (a Row) → RawRecord; tombstones (null values) are counted and dropped."""

    def __init__(self) -> None:
        self._tombstones = Metrics.counter(metrics.NAMESPACE, TOMBSTONES)

    def process(self, record: Any) -> Iterator[RawRecord]:
        if record.value is None:
            self._tombstones.inc()
        else:
            stamp = record.timestamp / 1000.0 if record.timestamp is not None and record.timestamp >= 0 else None
            yield RawRecord(record.value, f"kafka:{record.topic}/{record.partition}@{record.offset}", stamp)


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
                commit_offset_in_finalize=bool(config.consumer_group),
                max_num_records=config.max_records,
                max_read_time=config.max_read_seconds,
                expansion_service=config.expansion_service(config.java_worker_pool))
            | "ToRawRecords" >> beam.ParDo(KafkaRecordToRawRecordFn())
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
