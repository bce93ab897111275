"""`--bigquery_method=STORAGE_WRITE_API` for real: Beam's Java Storage Write sink, expanded by
kappaflow's expansion service and run by Java workers, appends over gRPC to the emulator's Storage
Write API (through the `bigquery_front`: Beam's Java client dials one endpoint, with TLS).

What the consumers read must be what the SQL sink holds for the same input: the `_latest` view of
`clickstream_metrics` equals the SQLite table of a batch run, every row handed to the sink is in the
table once, and tables are partitioned and clustered from the schema declaration.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from fixtures_bigquery import PROJECT
from fixtures_kafka import produce_clickstream
from io_connectors.bigquery import java_options
from kappaflow import java_services, prism
from kappaflow.core.schemas.clickstream import CLICKSTREAM_METRICS
from kappaflow.launcher import run
from kappaflow.samples.clickstream import SampleConfig, build_reference_db, write_sample
from kappaflow.tables import diff_tables, read_rows
from kappaflow.wiring import bigquery_write_config
from pipelines import clickstream

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PANE = ("pane_index", "pane_timing", "updated_at")


def _query(emulator, sql: str) -> list[tuple]:
    client = emulator.client()
    try:
        return [tuple(row.values()) for row in client.query(sql).result()]
    finally:
        client.close()


def _metrics(emulator, dataset: str, relation: str = "clickstream_metrics_latest") -> list[dict]:
    """The rows of `relation`, timestamps as epoch seconds (as read_rows reads SQLite)."""
    client = emulator.client()
    try:
        rows = client.query(f"SELECT * FROM `{PROJECT}.{dataset}.{relation}`").result()
        return [{c: v.timestamp() if hasattr(v, "timestamp") else v for c, v in row.items()} for row in rows]
    finally:
        client.close()


def _keyed(rows: list[dict]) -> dict[tuple, dict]:
    """key → row without the pane columns: read_rows' form of the SQL table."""
    return {tuple(r[k] for k in CLICKSTREAM_METRICS.key): {c: v for c, v in r.items() if c not in _PANE}
            for r in rows}


@pytest.fixture
def sample(tmp_path):
    """(events file, reference db URL, SQLite table of the batch run on the DirectRunner)."""
    events, reference = str(tmp_path / "events.jsonl"), f"sqlite:///{tmp_path}/reference.db"
    config = SampleConfig(events=300)
    write_sample(events, config)
    build_reference_db(reference, config)
    output = f"sqlite:///{tmp_path}/batch.db"
    acc = run(clickstream.PIPELINE, clickstream.build, [f"--input={events}", f"--output={output}",
                                                        f"--reference_db={reference}", "--progress=off"],
              clickstream.ClickstreamOptions)
    assert acc.balanced and acc.invalid > 0
    return events, reference, read_rows(output, CLICKSTREAM_METRICS)


def _command(url: str, front, reference: str, tmp_path, *args: str) -> tuple[list[str], dict]:
    # The Java workers are started by the run (a new process) and trust the front's certificate.
    env = {**os.environ, "JAVA_TOOL_OPTIONS": front.java_tool_options(),
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return [sys.executable, "-m", "pipelines.clickstream", f"--output={url}", f"--reference_db={reference}",
            f"--temp_location={tmp_path}", f"--bigquery_endpoint=localhost:{front.port}",
            "--bigquery_method=STORAGE_WRITE_API", *args], env


@pytest.mark.parametrize("args,method", [
    (("--runner=FlinkRunner", "--streaming", "--input=kafka://b:9092/clicks"), "STORAGE_WRITE_API"),
    (("--runner=FlinkRunner", "--streaming", "--input_subscription=projects/p/subscriptions/s"), "STORAGE_WRITE_API"),
    # A replay's end never finishes a Storage Write on Flink; Prism cannot build it; the Python
    # DirectRunner runs no Java transform; a local endpoint has no TLS gRPC for Beam's Java client.
    (("--runner=FlinkRunner", "--streaming", "--input=events.jsonl"), "AUTO"),
    (("--runner=PrismRunner", "--streaming", "--input=kafka://b:9092/clicks"), "AUTO"),
    (("--streaming", "--input_subscription=projects/p/subscriptions/s"), "AUTO"),
    (("--runner=FlinkRunner", "--streaming", "--input=kafka://b:9092/clicks", "--bigquery_endpoint=localhost:9050"),
     "AUTO"),
    (("--runner=FlinkRunner", "--input=events.jsonl"), "AUTO"),  # batch: one load job per table
    (("--runner=FlinkRunner", "--streaming", "--input=kafka://b:9092/clicks", "--bigquery_method=STREAMING_INSERTS"),
     "STREAMING_INSERTS"),
])
def test_streaming_default_is_the_exactly_once_storage_write_api_where_it_runs(monkeypatch, args, method):
    monkeypatch.delenv("BIGQUERY_EMULATOR_HOST", raising=False)
    options = PipelineOptions(["--output=bigquery:p.d", *args]).view_as(clickstream.ClickstreamOptions)
    config = bigquery_write_config(options)
    assert config.method == method
    assert config.streaming_inserts == (method == "STREAMING_INSERTS" or (method == "AUTO" and "--streaming" in args))


@pytest.mark.slow
def test_batch_on_prism_lands_in_bigquery_as_in_sqlite(bigquery_emulator, bigquery_front, tmp_path, sample):
    events, reference, expected = sample
    dataset = "storage_write_batch"
    report = tmp_path / "run.json"
    command, env = _command(bigquery_emulator.dataset(dataset), bigquery_front, reference, tmp_path,
                            f"--input={events}", f"--report={report}", "--runner=PrismRunner")
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    accounting = json.loads(report.read_text())
    assert accounting["balanced"] and accounting["rows_written"] > 0 and accounting["invalid"] > 0

    # Exactly-once: every row handed to the sink is there once (batch: pending streams committed at
    # the end), and consumers read what the SQL sink holds.
    assert len(_metrics(bigquery_emulator, dataset, "clickstream_metrics")) == accounting["rows_written"]
    diff = diff_tables(expected, _keyed(_metrics(bigquery_emulator, dataset)))
    assert diff.identical, diff.summary()
    assert _query(bigquery_emulator, f"SELECT COUNT(*) FROM `{PROJECT}.{dataset}.dead_letters_latest`") == [
        (accounting["dead_letters_written"],)]

    client = bigquery_emulator.client()
    try:
        table = client.get_table(f"{PROJECT}.{dataset}.clickstream_metrics")
    finally:
        client.close()
    assert table.time_partitioning.field == "window_start"
    assert table.clustering_fields == ["event_type", "country"]


@pytest.mark.slow
def test_live_kafka_on_flink_writes_each_pane_once_through_buffered_streams(bigquery_emulator, bigquery_front,
                                                                            kafka_broker, tmp_path, sample):
    """Streaming exactly-once: a live Kafka job on embedded Flink appends each pane to BUFFERED
    write streams and flushes them every --bigquery_firing_seconds. The `_latest` view becomes the
    SQLite table of the batch run, and no (key, pane) is in the table twice; then Ctrl-C cancels
    the job (a live read has no end)."""
    events, reference, expected = sample
    url, _ = produce_clickstream(kafka_broker, events)
    dataset = "storage_write_live"
    command, env = _command(bigquery_emulator.dataset(dataset), bigquery_front, reference, tmp_path,
                            f"--input={url}", f"--kafka_consumer_group=kappaflow-test-{uuid.uuid4().hex[:8]}",
                            "--runner=FlinkRunner", "--streaming", "--bigquery_firing_seconds=2", "--progress=off")
    errors = tmp_path / "stderr.txt"  # a file: a full pipe would block the job
    job = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=errors.open("w"),
                           stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 420
        while True:
            assert job.poll() is None, f"the job ended by itself: {errors.read_text()[-3000:]}"
            try:
                got = _keyed(_metrics(bigquery_emulator, dataset))
            except Exception:  # noqa: BLE001 - the view does not exist before the first row
                got = {}
            if diff_tables(expected, got).identical:
                break
            assert time.monotonic() < deadline, diff_tables(expected, got).summary()
            time.sleep(3)
        time.sleep(6)  # three more firings: nothing may be appended twice
        job.send_signal(signal.SIGINT)
        job.wait(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 130, errors.read_text()[-3000:]
    rows = _metrics(bigquery_emulator, dataset, "clickstream_metrics")
    panes = [tuple(r[k] for k in (*CLICKSTREAM_METRICS.key, "pane_index")) for r in rows]
    assert len(panes) == len(set(panes)) >= len(expected)
    diff = diff_tables(expected, _keyed(_metrics(bigquery_emulator, dataset)))
    assert diff.identical, diff.summary()


@pytest.mark.slow
def test_prism_still_lacks_the_sharded_key_coder_of_streaming_storage_writes():
    """Why the preflight refuses a streaming Storage Write on Prism (kappaflow/runner_support.py):
    its exactly-once streams are keyed with Beam's `sharded_key` coder, which Prism 2.70 cannot build
    (with auto-sharding or a fixed stream count alike). When this fails, Prism runs it: lift the
    refusal, and streaming on Prism can take the Storage Write API."""
    from apache_beam.transforms.periodicsequence import PeriodicImpulse

    options = PipelineOptions(["--streaming"])
    runner, _ = prism.resolve(options)
    pipeline = beam.Pipeline(runner, options=options)
    _ = (pipeline  # an unbounded input: Beam's Java sink takes its streaming (sharded) path
         | PeriodicImpulse(fire_interval=1, stop_timestamp=time.time() + 3)
         | beam.Map(lambda _: {"n": 1})
         | beam.io.WriteToBigQuery(
             f"{PROJECT}:nowhere.t", schema={"fields": [{"name": "n", "type": "INT64", "mode": "NULLABLE"}]},
             method="STORAGE_WRITE_API", create_disposition="CREATE_NEVER", triggering_frequency=1,
             expansion_service=java_services.expansion_service(None, java_options("127.0.0.1:9"))))
    try:
        with pytest.raises(RuntimeError, match="unknown coder urn key: beam:coder:sharded_key:v1"):
            pipeline.run().wait_until_finish(duration=90_000)
    finally:
        java_services.stop()
