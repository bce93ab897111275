"""Kafka: the source's and the alerts sink's configuration and record conversion; IoT alerts
published to a real KRaft broker through Beam's Java WriteToKafka; a live job's accounting printed
while it runs and when Ctrl-C cancels it.

The live jobs of every pipeline reading Kafka on Prism and embedded Flink, compared with the batch
run over the same events, are in tests/test_runner_conformance.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from io_connectors.kafka import (
    TOMBSTONES, KafkaReadConfig, KafkaRecordToRawRecordFn, KafkaWriteConfig, ToKafkaRecordFn, check_kafka,
    parse_kafka_config)
from io_connectors.sources import ReadInput
from kappaflow.core.records import RawRecord
from kappaflow.core.schemas.iot import SENSOR_ALERTS
from kappaflow.launcher import run
from kappaflow.samples import iot as iot_samples
from kappaflow.tables import read_rows
from kappaflow.wiring import kafka_write_config
from pipelines import clickstream, iot_sensors
from transforms.event_time import EventTimeOf

from conftest import counter
from fixtures_kafka import produce_iot

ROOT = Path(__file__).resolve().parent.parent


# --- configuration -------------------------------------------------------------------------------

def test_url_names_servers_and_topics_and_config_goes_to_the_consumer():
    config = KafkaReadConfig("kafka://10.0.0.1:9092,10.0.0.2:9092/clicks,views", "kappaflow-clicks",
                             parse_kafka_config("security.protocol=SASL_SSL,sasl.mechanism=PLAIN,"
                                                "auto.offset.reset=latest"))
    assert config.topics == ["clicks", "views"]
    assert config.consumer_properties() == {
        "bootstrap.servers": "10.0.0.1:9092,10.0.0.2:9092", "group.id": "kappaflow-clicks",
        "enable.auto.commit": "true", "security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
        "auto.offset.reset": "latest"}
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


def test_ingest_time_is_the_kafka_timestamp_or_the_named_payload_field(run_batch):
    """IoT's clock-skew rule compares the device time with the ingest time: by default the Kafka
    timestamp (the gateway's send time); with --ingest_time_field the payload's field, as for files,
    and a record without it has none (so a Kafka run equals the batch run over the same records)."""
    row = lambda value: beam.Row(topic="readings", partition=0, offset=3, timestamp=1_772_431_300_000, key=b"d",
                                 value=value)
    stamped, bare = b'{"device_id": "d", "ingest_time": 1772431200279}', b'{"device_id": "d"}'

    def build(p):
        rows = p | beam.Create([row(stamped), row(bare)])
        by_timestamp = rows | "ByTimestamp" >> beam.ParDo(KafkaRecordToRawRecordFn())
        by_field = rows | "ByField" >> beam.ParDo(KafkaRecordToRawRecordFn("ingest_time"))
        origin = "kafka:readings/0@3"
        assert_that(by_timestamp, equal_to([RawRecord(stamped, origin, 1_772_431_300.0),
                                            RawRecord(bare, origin, 1_772_431_300.0)]), label="timestamp")
        assert_that(by_field, equal_to([RawRecord({"device_id": "d"}, origin, 1_772_431_200.279),
                                        RawRecord({"device_id": "d"}, origin, None)]), label="field")

    run_batch(build)


def test_alerts_topic_takes_one_kafka_topic_and_the_security_settings():
    opts = PipelineOptions(["--kafka_config=security.protocol=SASL_SSL,sasl.mechanism=PLAIN,"
                            "auto.offset.reset=latest,ssl.truststore.location=/etc/ts.jks"])
    config = kafka_write_config(opts, "kafka://10.0.0.1:9092,10.0.0.2:9092/alerts")
    assert config.topic == "alerts"
    # The consumer's offset reset is not the producer's business; how to reach the cluster is.
    assert config.producer_properties() == {
        "bootstrap.servers": "10.0.0.1:9092,10.0.0.2:9092", "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN", "ssl.truststore.location": "/etc/ts.jks"}
    for url in ("kafka://h:9092/a,b", "kafka://h/alerts", "projects/p/topics/alerts"):
        with pytest.raises(ValueError, match="expected kafka://HOST:PORT"):
            KafkaWriteConfig(url)
    key, value = next(ToKafkaRecordFn("alert_id", ("window_start",)).process(
        {"alert_id": "dev-1/2026", "window_start": 1_772_431_200.0, "max": 95.5}))
    assert key == b"dev-1/2026"
    assert json.loads(value) == {"alert_id": "dev-1/2026", "window_start": "2026-03-02T06:00:00.000000Z",
                                 "max": 95.5}


@pytest.fixture(scope="module")
def iot_sample(tmp_path_factory):
    directory = tmp_path_factory.mktemp("kafka-iot")
    config = iot_samples.SampleConfig(readings=600)
    readings = str(directory / "readings.jsonl")
    reference = f"sqlite:///{directory}/reference.db"
    iot_samples.write_sample(readings, config)
    iot_samples.build_reference_db(reference, config)
    return readings, (f"--reference_db={reference}", "--ingest_time_field=ingest_time")


@pytest.mark.slow
def test_iot_alerts_arrive_on_a_kafka_topic(kafka_broker, iot_sample, tmp_path, shared_java_services):
    """Every alert the table holds arrives on the topic, keyed by its alert_id; the record of a key
    with the highest pane_index is the alert's last pane, the table's row."""
    readings, args = iot_sample
    topic = kafka_broker.topic()
    output = f"sqlite:///{tmp_path}/out.db"
    acc = run("iot_sensors", iot_sensors.build,
              [f"--input={readings}", f"--output={output}", *args, "--runner=PrismRunner",
               f"--alerts_topic=kafka://{kafka_broker.bootstrap}/{topic}"], iot_sensors.IotSensorsOptions)
    assert acc.balanced, acc.summary()

    alerts = {key[0]: row for key, row in read_rows(output, SENSOR_ALERTS).items()}
    assert alerts, "the sample raised no alert: nothing to publish"
    published = kafka_broker.consume(topic, expected=10 * len(alerts), timeout_seconds=15)
    panes: dict[str, list[dict]] = {}
    for record in published:  # every pane (Prism fires a window's panes even in batch), in any order
        panes.setdefault(record.key.decode(), []).append(json.loads(record.value))
    assert sorted(panes) == sorted(alerts)
    last = {alert_id: max(messages, key=lambda m: m["pane_index"]) for alert_id, messages in panes.items()}
    for alert_id, message in last.items():
        row = alerts[alert_id]
        assert (message["device_id"], message["severity"], message["max"]) == (
            row["device_id"], row["severity"], row["max"])


@pytest.mark.slow
def test_live_job_prints_its_accounting_while_it_runs_and_when_cancelled(kafka_broker, iot_sample, tmp_path):
    """The command line, as a user runs it: an unbounded Kafka read on Prism prints the accounting
    every --report_every_seconds; Ctrl-C cancels the job and prints where it stood."""
    readings, args = iot_sample
    url, produced = produce_iot(kafka_broker, readings)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [sys.executable, "-m", "pipelines.iot_sensors", f"--input={url}", *args, "--streaming",
               "--runner=PrismRunner", f"--output=sqlite:///{tmp_path}/out.db", "--progress=off",
               "--report_every_seconds=3"]
    errors = tmp_path / "stderr.txt"  # a file: a full stderr pipe would block the job
    job = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=errors.open("w"), text=True)
    running = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and job.poll() is None:
            line = job.stdout.readline()
            if ", running: read " in line:
                running.append(line)
                # Two reports after every record was read: the job is live and the counts are current.
                if sum(1 for r in running if f"read {produced:,} " in r) >= 2:
                    break
        assert job.poll() is None, f"the job ended by itself: {errors.read_text()[-3000:]}"
        job.send_signal(signal.SIGINT)
        out, _ = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    err = errors.read_text()
    assert len(running) >= 2, running
    assert all(re.search(r"\| in flight [0-9,]+$", r.strip()) for r in running), running
    cancelled = [line for line in out.splitlines() if ", cancelled: read " in line]
    assert len(cancelled) == 1 and f"read {produced:,} " in cancelled[0], out
    assert job.returncode == 130 and "interrupted" in err, (job.returncode, err[-2000:])
    print(running[-1], cancelled[0])
