"""Kafka: the source's configuration and record conversion, and live jobs on Prism and embedded
Flink reading a real KRaft broker through Beam's Java KafkaIO that end with the batch run's table.

The live jobs read with `--kafka_max_records` (KafkaIO's bound for tests and demos): the read stops
after the records produced, so the job ends by itself and its table can be compared.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from io_connectors.kafka import (
    TOMBSTONES, KafkaReadConfig, KafkaRecordToRawRecordFn, check_kafka, parse_kafka_config)
from io_connectors.sources import ReadInput
from kappaflow import java_services
from kappaflow.launcher import run
from kappaflow.samples import clickstream as clickstream_samples
from kappaflow.schemas.clickstream import CLICKSTREAM_METRICS
from kappaflow.tables import diff_tables, read_rows
from pipelines import clickstream
from transforms.event_time import EventTimeOf
from transforms.records import RawRecord
from transforms.schema import parse_timestamp

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
            ["--input=kafka://127.0.0.1:1/clicks", "--streaming", f"--output=sqlite:///{tmp_path}/o.db",
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

def _produce_clickstream(kafka_broker, directory: Path) -> tuple[str, str, int, tuple[str, ...]]:
    """The sample's lines as records keyed by user, each stamped with its event time (what the
    web collector in front of the topic does); malformed lines go too. → (file, topic, count, args)."""
    config = clickstream_samples.SampleConfig(events=600, too_late_share=0.0)
    events = str(directory / "events.jsonl")
    reference = f"sqlite:///{directory}/reference.db"
    clickstream_samples.write_sample(events, config)
    clickstream_samples.build_reference_db(reference, config)
    records = []
    for line in Path(events).read_text(encoding="utf-8").splitlines():
        try:
            event = json.loads(line)
            key, stamp = str(event.get("user_id")).encode(), int(parse_timestamp(event["timestamp"]) * 1000)
        except (ValueError, TypeError, KeyError, AttributeError):
            key, stamp = None, None  # malformed: the parser dead-letters it, as in the batch run
        records.append((key, line.encode("utf-8"), stamp))
    topic = kafka_broker.topic()
    return events, topic, kafka_broker.produce(topic, records), (f"--reference_db={reference}",)


@pytest.fixture(scope="module")
def clickstream_on_kafka(kafka_broker, tmp_path_factory):
    """Events on a topic, and the batch run's table over the same events as a file."""
    directory = tmp_path_factory.mktemp("kafka-clickstream")
    events, topic, produced, args = _produce_clickstream(kafka_broker, directory)
    batch_output = f"sqlite:///{directory}/batch.db"
    batch = run("clickstream", clickstream.build, [f"--input={events}", f"--output={batch_output}", *args],
                clickstream.ClickstreamOptions)
    assert batch.balanced and batch.read == produced
    return {"url": f"kafka://{kafka_broker.bootstrap}/{topic}", "produced": produced, "args": args,
            "batch": batch, "batch_rows": read_rows(batch_output, CLICKSTREAM_METRICS)}


@pytest.mark.slow
@pytest.mark.parametrize("runner,label", [("PrismRunner", "PrismRunner"), ("FlinkRunner", "embedded Flink")])
def test_live_clickstream_from_kafka_ends_with_the_batch_table(runner, label, clickstream_on_kafka, tmp_path):
    sample = clickstream_on_kafka
    output = f"sqlite:///{tmp_path}/live.db"
    acc = run("clickstream", clickstream.build,
              [f"--input={sample['url']}", f"--output={output}", *sample["args"], f"--runner={runner}",
               "--streaming", f"--kafka_consumer_group=kappaflow-test-{uuid.uuid4().hex[:8]}",
               f"--kafka_max_records={sample['produced']}"],
              clickstream.ClickstreamOptions)

    assert label in acc.runner and acc.mode == "streaming", acc.runner
    assert not java_services.running()  # the run stopped the expansion service and Java workers
    batch = sample["batch"]
    assert acc.balanced, acc.summary()
    assert (acc.read, acc.invalid, acc.duplicates, acc.too_late, acc.aggregated) == (
        batch.read, batch.invalid, batch.duplicates, batch.too_late, batch.aggregated), acc.summary()
    diff = diff_tables(sample["batch_rows"], read_rows(output, CLICKSTREAM_METRICS))
    assert diff.identical, diff
