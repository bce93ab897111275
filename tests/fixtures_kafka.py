"""A single-node KRaft Kafka broker on free loopback ports (scripts/setup-kafka.sh, scripts/kafka.sh run),
and the pipelines' samples produced to it as their sources send them."""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import pytest

from fixtures_servers import ServerProcess, free_port

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class KafkaBroker:
    def __init__(self, partitions: int = 2) -> None:
        from kappaflow.runner_cache import cache_dir

        if not os.path.isdir(os.path.join(cache_dir(), "kafka")):
            raise RuntimeError("no Kafka broker: run scripts/setup-kafka.sh (make servers)")
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.partitions = partitions
        self._dir = tempfile.mkdtemp(prefix="kappaflow-kafka-")
        env = {**os.environ, "KAFKA_PORT": str(self.port), "KAFKA_CONTROLLER_PORT": str(free_port()),
               "KAFKA_DIR": self._dir, "KAFKA_PARTITIONS": str(partitions)}
        # Formatting the storage and starting the JVMs takes ~5-15 s on a shared machine.
        self._server = ServerProcess(["bash", os.path.join(_REPO, "scripts", "kafka.sh"), "run"],
                                     self.port, 90, "the Kafka broker", env=env)

    def topic(self, partitions: Optional[int] = None) -> str:
        """A new, empty topic (created explicitly, so every partition exists before a reader starts)."""
        from kafka.admin import KafkaAdminClient, NewTopic

        name = f"t-{uuid.uuid4().hex[:12]}"
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            admin.create_topics([NewTopic(name, partitions or self.partitions, 1)])
        finally:
            admin.close()
        return name

    def produce(self, topic: str, records: Iterable[tuple[Optional[bytes], Optional[bytes], Optional[int]]]) -> int:
        """Sends (key, value, timestamp ms) records and waits for every acknowledgement; a None value
        is a tombstone. Records with the same key land in the same partition, in order."""
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        try:
            futures = [producer.send(topic, key=key, value=value, timestamp_ms=ts) for key, value, ts in records]
            for future in futures:
                future.get(timeout=30)
        finally:
            producer.close()
        return len(futures)

    def consume(self, topic: str, expected: int, timeout_seconds: float = 60.0) -> list:
        """The records of `topic` from its start, until `expected` arrived or the time is up."""
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(topic, bootstrap_servers=self.bootstrap, auto_offset_reset="earliest",
                                 enable_auto_commit=False, consumer_timeout_ms=int(timeout_seconds * 1000))
        records = []
        try:
            for record in consumer:
                records.append(record)
                if len(records) >= expected:
                    break
        finally:
            consumer.close()
        return records

    def stop(self) -> None:
        self._server.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


# --- samples as their producers send them -------------------------------------------------------

Record = tuple[Optional[bytes], Optional[bytes], Optional[int]]  # key, value (None: tombstone), timestamp ms


def _lines(pattern: str) -> Iterator[str]:
    for path in sorted(glob.glob(pattern)):
        yield from Path(path).read_text(encoding="utf-8").splitlines()


def keyed_records(lines: Iterable[str], key_field: str, stamp: Callable[[dict], float]) -> list[Record]:
    """Lines keyed by `key_field` and stamped `stamp(event)` (epoch seconds): what the collector or
    gateway sends. A line that cannot be read goes as it is, stamped like the line before it (the
    parser dead-letters it, as in the batch run)."""
    from kappaflow.core.schema import parse_timestamp

    records: list[Record] = []
    last: Optional[int] = None
    for line in lines:
        try:
            event = json.loads(line)
            key, last = str(event[key_field]).encode(), int(parse_timestamp(stamp(event)) * 1000)
        except (ValueError, TypeError, KeyError, AttributeError):
            key = None
        records.append((key, line.encode(), last))
    return records


def gateway_send_time(reading: dict):
    """IoT: a gateway sends a reading when it received it (its ingest_time); a sensor that sends
    directly, when it measured it. Never later than what the sample says arrived."""
    return reading["ingest_time"] if reading.get("ingest_time") is not None else reading["timestamp"]


def produce_clickstream(broker: KafkaBroker, sample_input: str) -> tuple[str, int]:
    """Web events on one topic, keyed by user (as the collector partitions them), stamped with event time."""
    topic = broker.topic()
    produced = broker.produce(topic, keyed_records(_lines(sample_input), "user_id", lambda e: e["timestamp"]))
    return f"kafka://{broker.bootstrap}/{topic}", produced


def produce_iot(broker: KafkaBroker, sample_input: str) -> tuple[str, int]:
    """Readings on one topic, keyed by device, stamped with the time the gateway sent them."""
    topic = broker.topic()
    produced = broker.produce(topic, keyed_records(_lines(sample_input), "device_id", gateway_send_time))
    return f"kafka://{broker.bootstrap}/{topic}", produced


def change_records(line: str, key_columns: dict[str, list[str]]) -> tuple[str, list[Record]]:
    """A Debezium line as Kafka Connect publishes it: on its table's topic, keyed by the row's
    primary key, stamped with the change time, and after a delete a tombstone (null value) with the
    same key. Wrapped (`schema` + `payload`) and bare envelopes go as they are. → (table, records)."""
    try:
        decoded = json.loads(line)
        envelope = decoded["payload"] if isinstance(decoded.get("payload"), dict) else decoded
        table = envelope["source"]["table"]
        image = envelope.get("after") or envelope.get("before") or {}
        key = json.dumps({c: image[c] for c in key_columns[table]}).encode()
        stamp = int(envelope["source"]["ts_ms"])
    except (ValueError, TypeError, KeyError, AttributeError):
        return "customers", [(None, line.encode(), None)]  # a bad event: the parser dead-letters it
    records: list[Record] = [(key, line.encode(), stamp)]
    if envelope.get("op") == "d":
        records.append((key, None, stamp))
    return table, records


def produce_cdc(broker: KafkaBroker, sample_input: str) -> tuple[str, int]:
    """Debezium change events, one topic per table (tombstones included); → (URL of all topics,
    records produced, tombstones too: the read counts them)."""
    from kappaflow.samples import cdc as cdc_samples

    key_columns = {table: columns.split("+") for table, columns in
                   (item.split(":") for item in cdc_samples.PRIMARY_KEYS.split(","))}
    topics = {table: broker.topic() for table in key_columns}
    records: dict[str, list[Record]] = {topic: [] for topic in topics.values()}
    for line in _lines(sample_input):
        table, table_records = change_records(line, key_columns)
        records[topics.get(table, topics["customers"])].extend(table_records)
    assert any(value is None for items in records.values() for _, value, _ in items), "no tombstone"
    produced = sum(broker.produce(topic, items) for topic, items in records.items())
    return f"kafka://{broker.bootstrap}/{','.join(topics.values())}", produced


@pytest.fixture(scope="session")
def kafka_broker():
    broker = KafkaBroker()
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def shared_java_services():
    """One expansion service and Java worker pool for a module's runs (each run would otherwise
    start and stop its own: ~5-30 s of JVM start-up); stopped when the module is done."""
    from kappaflow import java_services

    with java_services.kept():
        yield
    assert not java_services.running()
