"""Kafka: the source's configuration and record conversion, and live jobs on Prism and embedded
Flink reading a real KRaft broker through Beam's Java KafkaIO that end with the batch run's table
(clickstream; CDC from Debezium topics, wrapped and bare envelopes, with tombstones after deletes).

The live jobs read with `--kafka_max_records` (KafkaIO's bound for tests and demos): the read stops
after the records produced, so the job ends by itself and its table can be compared.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path
from types import ModuleType
from typing import Callable, Optional

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from io_connectors.kafka import (
    TOMBSTONES, KafkaReadConfig, KafkaRecordToRawRecordFn, check_kafka, parse_kafka_config)
from io_connectors.sources import ReadInput
from kappaflow import java_services
from kappaflow.core.records import RawRecord
from kappaflow.core.schema import parse_timestamp
from kappaflow.core.schemas.clickstream import CLICKSTREAM_METRICS
from kappaflow.launcher import run
from kappaflow.samples import cdc as cdc_samples
from kappaflow.samples import clickstream as clickstream_samples
from kappaflow.tables import diff_tables, read_change_tables, read_rows
from pipelines import cdc, clickstream
from transforms.event_time import EventTimeOf

from conftest import counter


# --- configuration -------------------------------------------------------------------------------

def test_url_names_servers_and_topics_and_config_goes_to_the_consumer():
    config = KafkaReadConfig("kafka://10.0.0.1:9092,10.0.0.2:9092/clicks,views", "kappaflow-clicks",
                             parse_kafka_config("security.protocol=SASL_SSL,sasl.mechanism=PLAIN,"
                                                "auto.offset.reset=latest"))
    assert config.topics == ["clicks", "views"]
    assert config.consumer_properties() == {
        "bootstrap.servers": "10.0.0.1:9092,10.0.0.2:9092", "group.id": "kappaflow-clicks",
        "security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "auto.offset.reset": "latest"}
    # Without a group nothing is committed; a new job starts at the earliest retained record.
    assert KafkaReadConfig("kafka://h:9092/t").consumer_properties() == {
        "bootstrap.servers": "h:9092", "auto.offset.reset": "earliest"}


@pytest.mark.parametrize("url,config,message", [
    ("kafka://broker/clicks", "", "expected kafka://HOST:PORT"),
    ("kafka://broker:9092/", "", "expected kafka://HOST:PORT"),
    ("kafka://broker:9092/a/b", "", "expected kafka://HOST:PORT"),
    ("kafka://broker:9092/a", "group.id=x", "group.id is set by --kafka_consumer_group"),
    ("kafka://broker:9092/a", "bootstrap.servers=x:1", "bootstrap.servers is set by the kafka:// URL"),
    ("kafka://broker:9092/a", "fetch.min.bytes", "'fetch.min.bytes' is not KEY=VALUE"),
])
def test_bad_configuration_stops_with_the_option_named(url, config, message):
    with pytest.raises(ValueError, match=message):
        KafkaReadConfig(url, consumer_config=parse_kafka_config(config))


def test_kafka_needs_streaming():
    with pytest.raises(ValueError, match="needs --streaming"):
        ReadInput("kafka://broker:9092/clicks", False, EventTimeOf("timestamp"))


def test_unreachable_broker_stops_the_run_in_one_line(tmp_path):
    with pytest.raises(SystemExit, match=r"^clickstream: Kafka at 127.0.0.1:1 is not reachable"):
        run("clickstream", clickstream.build,
            ["--input=kafka://127.0.0.1:1/clicks", "--runner=PrismRunner", "--streaming",
             f"--output=sqlite:///{tmp_path}/o.db",
             f"--reference_db=sqlite:///{tmp_path}/r.db"], clickstream.ClickstreamOptions)
    with pytest.raises(ConnectionError, match="127.0.0.1:1"):
        check_kafka("kafka://127.0.0.1:1/clicks")


def test_records_become_raw_records_and_tombstones_are_counted(run_batch):
    rows = [beam.Row(topic="changes", partition=1, offset=7, timestamp=1_767_600_000_123, key=b"k",
                     value=b'{"op": "d"}'),
            beam.Row(topic="changes", partition=1, offset=8, timestamp=1_767_600_000_124, key=b"k", value=None)]

    def build(p):
        records = p | beam.Create(rows) | beam.ParDo(KafkaRecordToRawRecordFn())
        assert_that(records, equal_to([RawRecord(b'{"op": "d"}', "kafka:changes/1@7", 1_767_600_000.123)]))

    assert counter(run_batch(build), TOMBSTONES) == 1


# --- live jobs on a real broker ------------------------------------------------------------------

def _event_record(line: str) -> tuple[Optional[bytes], bytes, Optional[int]]:
    """A clickstream line as the web collector sends it: keyed by user, stamped with its event time;
    a malformed line goes as it is (the parser dead-letters it, as in the batch run)."""
    try:
        event = json.loads(line)
        return str(event["user_id"]).encode(), line.encode(), int(parse_timestamp(event["timestamp"]) * 1000)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None, line.encode(), None


def _produce_clickstream(broker, directory: Path) -> tuple[str, str, int, tuple[str, ...]]:
    config = clickstream_samples.SampleConfig(events=600, too_late_share=0.0)
    events = str(directory / "events.jsonl")
    reference = f"sqlite:///{directory}/reference.db"
    clickstream_samples.write_sample(events, config)
    clickstream_samples.build_reference_db(reference, config)
    topic = broker.topic()
    produced = broker.produce(topic, map(_event_record, Path(events).read_text(encoding="utf-8").splitlines()))
    return events, f"kafka://{broker.bootstrap}/{topic}", produced, (f"--reference_db={reference}",)


def _change_records(line: str, key_columns: dict[str, list[str]]) -> tuple[str, list]:
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
    records = [(key, line.encode(), stamp)]
    if envelope.get("op") == "d":
        records.append((key, None, stamp))
    return table, records


def _produce_cdc(broker, directory: Path) -> tuple[str, str, int, tuple[str, ...]]:
    cdc_samples.write_sample(str(directory), cdc_samples.CdcSampleConfig(changes=400))
    key_columns = {table: columns.split("+") for table, columns in
                   (item.split(":") for item in cdc_samples.PRIMARY_KEYS.split(","))}
    topics = {table: broker.topic() for table in key_columns}
    records: dict[str, list] = {topic: [] for topic in topics.values()}
    for name in cdc_samples.FILES:
        for line in (directory / name).read_text(encoding="utf-8").splitlines():
            table, table_records = _change_records(line, key_columns)
            records[topics.get(table, topics["customers"])].extend(table_records)
    produced = sum(broker.produce(topic, items) for topic, items in records.items())
    tombstones = sum(1 for items in records.values() for _, value, _ in items if value is None)
    assert tombstones > 0
    url = f"kafka://{broker.bootstrap}/{','.join(topics.values())}"
    return f"{directory}/*.jsonl", url, produced, (f"--primary_keys={cdc_samples.PRIMARY_KEYS}",)


def _cdc_output(url: str) -> dict:
    return {(table, *key): row for table, rows in read_change_tables(url).items() for key, row in rows.items()}


@dataclasses.dataclass(frozen=True)
class LiveCase:
    module: ModuleType
    options_class: type
    produce: Callable[[object, Path], tuple[str, str, int, tuple[str, ...]]]
    read_output: Callable[[str], dict]


CASES = {
    "clickstream": LiveCase(clickstream, clickstream.ClickstreamOptions, _produce_clickstream,
                            lambda url: read_rows(url, CLICKSTREAM_METRICS)),
    "cdc": LiveCase(cdc, cdc.CdcOptions, _produce_cdc, _cdc_output),
}


def _counts(acc):
    # CDC's split of changes into applied, superseded and duplicates depends on arrival order
    # (a change older than the applied one is superseded); the sum and the table do not.
    return (acc.read, acc.invalid, acc.too_late, acc.enrich_failed, acc.aggregated,
            acc.duplicates + acc.applied + acc.superseded)


@pytest.fixture(scope="module")
def shared_java_services():
    """One expansion service and Java worker pool for the module's runs (each run would otherwise
    start and stop its own: ~5-30 s of JVM start-up); stopped when the module is done."""
    with java_services.kept():
        yield
    assert not java_services.running()


@pytest.fixture(scope="module")
def on_kafka(kafka_broker, tmp_path_factory, shared_java_services):
    """pipeline name → its sample produced to Kafka and the batch run over the same events, made once."""
    made: dict = {}

    def get(name: str) -> dict:
        if name not in made:
            case = CASES[name]
            directory = tmp_path_factory.mktemp(f"kafka-{name}")
            batch_input, url, produced, args = case.produce(kafka_broker, directory)
            output = f"sqlite:///{directory}/batch.db"
            batch = run(name, case.module.build, [f"--input={batch_input}", f"--output={output}", *args],
                        case.options_class)
            assert batch.balanced, batch.summary()
            made[name] = {"url": url, "produced": produced, "args": args, "batch": batch,
                          "batch_rows": case.read_output(output)}
        return made[name]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("name,runner,label", [
    ("clickstream", "PrismRunner", "PrismRunner"),
    ("clickstream", "FlinkRunner", "embedded Flink"),
    ("cdc", "PrismRunner", "PrismRunner"),
])
def test_live_job_from_kafka_ends_with_the_batch_table(name, runner, label, on_kafka, tmp_path):
    sample, case = on_kafka(name), CASES[name]
    output = f"sqlite:///{tmp_path}/live.db"
    acc = run(name, case.module.build,
              [f"--input={sample['url']}", f"--output={output}", *sample["args"], f"--runner={runner}",
               "--streaming", f"--kafka_consumer_group=kappaflow-test-{uuid.uuid4().hex[:8]}",
               f"--kafka_max_records={sample['produced']}"],
              case.options_class)

    assert label in acc.runner and acc.mode == "streaming", acc.runner
    assert java_services.running()  # kept for the next run by shared_java_services, which stops them
    assert acc.balanced, acc.summary()
    assert _counts(acc) == _counts(sample["batch"]), acc.summary()
    diff = diff_tables(sample["batch_rows"], case.read_output(output))
    assert diff.identical, diff.summary()
