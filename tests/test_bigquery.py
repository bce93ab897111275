"""The BigQuery sink, its `_latest` views and the BigQuery input, against bqemulator."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import BeamAssertException, assert_that

from fixtures_bigquery import PROJECT
from fixtures_servers import free_port
from io_connectors.bigquery import (BigQueryLocation, BigQueryWriteConfig, WriteToBigQueryTable, insert_id,
                                    latest_view_query, table_definition, to_bigquery_row)
from kappaflow import beam_workarounds
from kappaflow.core.records import dead_letter_row
from kappaflow.core.retry import RetryPolicy
from kappaflow.core.schema import Field, FieldType, Schema
from kappaflow.core.schemas.clickstream import CLICKSTREAM_EVENT, CLICKSTREAM_METRICS
from kappaflow.launcher import run
from kappaflow.options import KappaflowOptions
from kappaflow.samples.clickstream import SampleConfig, build_reference_db, write_sample
from kappaflow.tables import read_rows
from kappaflow.wiring import bigquery_write_config
from pipelines import clickstream

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T0 = 1704067200.0
PAGES = Schema(
    name="page_metrics", key=("window_start", "page"), partition_field="window_start", cluster_fields=("page",),
    description="Pages.",
    fields=(Field("window_start", FieldType.TIMESTAMP, required=True), Field("page", FieldType.STRING, required=True),
            Field("events", FieldType.INT64, required=True), Field("pane_index", FieldType.INT64, required=True)),
)


def _config(p: beam.Pipeline) -> BigQueryWriteConfig:
    """The sink's configuration as the runtime builds it from the test pipeline's options."""
    return bigquery_write_config(p.options.view_as(KappaflowOptions))


def test_table_definition_comes_from_the_schema_declaration():
    table = table_definition(CLICKSTREAM_METRICS, "p1.d1.clickstream_metrics")
    assert table.time_partitioning.field == "window_start" and table.time_partitioning.type_ == "DAY"
    assert table.clustering_fields == ["event_type", "country"]
    assert table.description == CLICKSTREAM_METRICS.description
    events = next(f for f in table.schema if f.name == "events")
    assert (events.field_type, events.mode, events.description) == ("INT64", "REQUIRED", "Unique events.")


@pytest.mark.parametrize("runner, files_per_firing", [
    (None, 100), ("DirectRunner", 100), ("PrismRunner", 100), ("prism", 100),
    ("FlinkRunner", None), ("DataflowRunner", None),
])
def test_the_runtime_chooses_per_runner_when_loads_fire(runner, files_per_firing):
    """On the local runners (Prism 2.70 hangs on repeated processing-time triggers) loads and MERGEs
    fire every 100 staged files, elsewhere every --bigquery_firing_seconds: chosen once, in the
    wiring, and handed to the sinks as a config value."""
    argv = ["--streaming", "--bigquery_firing_seconds=30"] + ([f"--runner={runner}"] if runner else [])
    config = bigquery_write_config(PipelineOptions(argv).view_as(KappaflowOptions))
    assert (config.files_per_firing, config.firing_seconds, config.streaming) == (files_per_firing, 30, True)


def test_latest_view_insert_id_and_rows():
    sql = latest_view_query(PAGES, "p1.d1.page_metrics")
    assert "PARTITION BY window_start, page ORDER BY pane_index DESC" in sql and "`p1.d1.page_metrics`" in sql
    row = {"window_start": T0, "page": "home", "events": 3, "pane_index": 2, "extra": 1}
    assert insert_id(PAGES, row) == "2024-01-01T00:00:00.000000Z|home#2"
    assert to_bigquery_row(PAGES, row) == {"window_start": "2024-01-01T00:00:00.000000Z", "page": "home",
                                           "events": 3, "pane_index": 2}
    assert BigQueryLocation.parse("bigquery:p1.d1.t1", with_table=True).table_id() == "p1.d1.t1"
    for bad in ("bigquery:p1", "bigquery:p1.d1.t1", "sqlite:///x"):
        with pytest.raises(ValueError):
            BigQueryLocation.parse(bad, with_table=False)


def _query(emulator, sql: str) -> list[tuple]:
    client = emulator.client()
    try:
        return sorted(tuple(r) for r in client.query(sql).result())
    finally:
        client.close()


def _rejected(table_id: str, pages: list[str]):
    def check(rejections):
        actual = [dead_letter_row(r, "test") for r in rejections]
        if sorted(json.loads(d["payload"])["page"] for d in actual) != pages:
            raise BeamAssertException(f"dead letters {actual}")
        if not all(d["stage"] == "sink" and d["reason"].startswith(f"{table_id}: ") for d in actual):
            raise BeamAssertException(f"reason does not name the table: {actual}")
    return check


@pytest.mark.slow
@pytest.mark.parametrize("streaming", [False, True], ids=["load_jobs", "streaming_inserts"])
def test_write_rows_views_and_rejects(bigquery_emulator, tmp_path, monkeypatch, streaming):
    dataset = f"pages_{'stream' if streaming else 'batch'}"
    url = bigquery_emulator.dataset(dataset)
    table_id = f"{PROJECT}.{dataset}.page_metrics"
    # The google-cloud-bigquery convention: no --bigquery_endpoint, no credentials.
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bigquery_emulator.host)
    rows = [{"window_start": T0, "page": "home", "events": 3, "pane_index": 0},
            {"window_start": T0, "page": "home", "events": 5, "pane_index": 1},
            {"window_start": T0 + 60, "page": "cart", "events": 1, "pane_index": 0},
            {"window_start": T0, "page": "bad", "events": "many", "pane_index": 0}]
    if streaming:
        beam_workarounds.keep_streaming_metrics()
        p = TestPipeline(runner=BundleBasedDirectRunner(), options=PipelineOptions(["--streaming"]))
    else:
        p = TestPipeline(runner=fn_runner.FnApiRunner(), options=PipelineOptions([f"--temp_location={tmp_path}"]))
    dead = p | beam.Create(rows) | WriteToBigQueryTable(
        url, PAGES, retry=RetryPolicy(attempts=2, initial_backoff_seconds=0.05), config=_config(p))
    assert_that(dead, _rejected(table_id, ["bad"]))
    p.run().wait_until_finish()

    assert _query(bigquery_emulator, f"SELECT page, events, pane_index FROM `{table_id}`") == [
        ("cart", 1, 0), ("home", 3, 0), ("home", 5, 1)]
    assert _query(bigquery_emulator, f"SELECT page, events FROM `{table_id}_latest`") == [("cart", 1), ("home", 5)]
    assert not list(tmp_path.glob("kappaflow-bq-loads/*"))  # staged load files are cleaned up
    client = bigquery_emulator.client()
    table = client.get_table(table_id)
    client.close()
    assert table.time_partitioning.field == "window_start" and table.clustering_fields == ["page"]


@pytest.mark.slow
def test_clickstream_to_bigquery_and_rerun_keeps_the_latest_view(bigquery_emulator, tmp_path):
    url = bigquery_emulator.dataset("clicks")
    events, reference = str(tmp_path / "events.jsonl"), f"sqlite:///{tmp_path}/reference.db"
    config = SampleConfig(events=600)
    write_sample(events, config)
    build_reference_db(reference, config)
    args = [f"--input={events}", f"--output={url}", f"--reference_db={reference}",
            f"--temp_location={tmp_path}", f"--bigquery_endpoint={bigquery_emulator.host}"]
    first = run(clickstream.PIPELINE, clickstream.build, args, clickstream.ClickstreamOptions)
    assert first.balanced and first.rows_written > 0 and first.dead_letters_written == first.invalid
    metrics = f"`{PROJECT}.clicks.clickstream_metrics_latest`"
    (total,) = _query(bigquery_emulator, f"SELECT SUM(events), COUNT(*) FROM {metrics}")
    assert total == (first.aggregated, first.rows_written)

    run(clickstream.PIPELINE, clickstream.build, args, clickstream.ClickstreamOptions)  # a rerun appends...
    assert _query(bigquery_emulator, f"SELECT COUNT(*) FROM `{PROJECT}.clicks.clickstream_metrics`") == [
        (2 * first.rows_written,)]
    # ...and consumers, who read the views, still see one row per key.
    assert _query(bigquery_emulator, f"SELECT SUM(events), COUNT(*) FROM {metrics}") == [total]
    assert _query(bigquery_emulator, f"SELECT COUNT(*) FROM `{PROJECT}.clicks.dead_letters_latest`") == [
        (first.invalid,)]


@pytest.mark.slow
def test_backfill_reads_the_input_from_a_bigquery_table(bigquery_emulator, tmp_path):
    from google.cloud import bigquery

    bigquery_emulator.dataset("raw")
    table_id = f"{PROJECT}.raw.events"
    client = bigquery_emulator.client()
    client.create_table(table_definition(CLICKSTREAM_EVENT, table_id), exists_ok=True)
    events = [{"event_id": f"e{i}", "user_id": f"u{i % 4:06d}", "event_type": "purchase" if i % 2 else "click",
               "timestamp": f"2024-01-01T00:{i:02d}:00Z", "properties": {"product_id": "p0001", "price": 1.5},
               "context": {"ip": "203.0.113.1"}} for i in range(30)]
    data = "".join(json.dumps(e) + "\n" for e in events + events[:5]).encode()  # 5 duplicates
    job = client.load_table_from_file(io.BytesIO(data), table_id, job_config=bigquery.LoadJobConfig(
        source_format="NEWLINE_DELIMITED_JSON"))
    job.result(timeout=60)
    client.close()
    reference, output = f"sqlite:///{tmp_path}/reference.db", f"sqlite:///{tmp_path}/out.db"
    build_reference_db(reference, SampleConfig(users=10, products=5))

    acc = run(clickstream.PIPELINE, clickstream.build,
              [f"--input=bigquery:{table_id}", f"--output={output}", f"--reference_db={reference}",
               f"--bigquery_endpoint={bigquery_emulator.host}"], clickstream.ClickstreamOptions)
    assert (acc.read, acc.invalid, acc.duplicates, acc.aggregated) == (35, 0, 5, 30) and acc.balanced
    rows = read_rows(output, CLICKSTREAM_METRICS)
    assert sum(r["events"] for r in rows.values()) == 30
    assert sum(r["revenue"] for r in rows.values()) == pytest.approx(15 * 1.5)


@pytest.mark.slow
def test_bigquery_down_at_start_is_one_clear_error(tmp_path):
    endpoint = f"127.0.0.1:{free_port()}"  # nothing listens there
    events = tmp_path / "events.jsonl"
    write_sample(str(events), SampleConfig(events=10))
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.clickstream", f"--input={events}", "--output=bigquery:p1.d1",
         f"--reference_db=sqlite:///{tmp_path}/r.db", f"--bigquery_endpoint={endpoint}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"clickstream: BigQuery at {endpoint} is not reachable (bigquery:p1.d1)"), last


def _load_jobs(emulator, table_id: str) -> int:
    client = emulator.client()
    try:
        return sum(1 for job in client.list_jobs(max_results=1000)
                   if job.job_type == "load" and job.destination
                   and f"{job.destination.project}.{job.destination.dataset_id}.{job.destination.table_id}" == table_id)
    finally:
        client.close()


@pytest.mark.slow
@pytest.mark.parametrize("streaming", [False, True], ids=["batch", "streaming"])
def test_one_load_job_per_table_whatever_the_bundles(bigquery_emulator, tmp_path, streaming):
    """Load jobs have a daily quota per table: a run of many bundles loads each table once (in
    streaming: once per firing; here the run ends before the first processing-time firing)."""
    from apache_beam.testing.test_stream import TestStream

    dataset = f"loads_{'stream' if streaming else 'batch'}"
    url = bigquery_emulator.dataset(dataset)
    table_id = f"{PROJECT}.{dataset}.page_metrics"
    rows = [{"window_start": T0 + 60 * (i % 7), "page": f"p{i}", "events": i, "pane_index": 0} for i in range(90)]
    args = [f"--temp_location={tmp_path}", f"--bigquery_endpoint={bigquery_emulator.host}",
            "--bigquery_method=FILE_LOADS", "--bigquery_firing_seconds=3600"]
    if streaming:  # every TestStream batch is a bundle of its own
        beam_workarounds.keep_streaming_metrics()
        p = TestPipeline(runner=BundleBasedDirectRunner(), options=PipelineOptions(["--streaming", *args]))
        stream = TestStream()
        for start in range(0, len(rows), 30):
            stream = stream.add_elements(rows[start:start + 30]).advance_watermark_to(T0 + start)
        source = p | stream.advance_watermark_to_infinity()
    else:  # three workers: the rows arrive in several bundles
        p = TestPipeline(runner=fn_runner.FnApiRunner(), options=PipelineOptions(
            ["--direct_num_workers=3", "--direct_running_mode=multi_threading", *args]))
        source = p | beam.Create(rows) | beam.Reshuffle()
    source | WriteToBigQueryTable(url, PAGES, config=_config(p))
    result = p.run()
    result.wait_until_finish()

    from conftest import counter
    assert counter(result, "bigquery_staged_files") >= 3  # one file per bundle...
    assert counter(result, "bigquery_load_jobs") == 1 == _load_jobs(bigquery_emulator, table_id)  # ...one load
    assert _query(bigquery_emulator, f"SELECT COUNT(*), SUM(events) FROM `{table_id}`") == [(90, sum(range(90)))]
    assert not list(tmp_path.glob("kappaflow-bq-loads/*/*"))  # staged files are cleaned up


@pytest.mark.slow
def test_alerts_latest_view_takes_the_latest_pane_and_the_first_created_at(bigquery_emulator, tmp_path):
    from io_connectors.sinks import WriteTable
    from kappaflow.core.schemas.iot import SENSOR_ALERTS

    url = bigquery_emulator.dataset("alerts")

    def alert(pane: int, mx: float, created: float, alert_id: str = "d1/w0") -> dict:
        return {"alert_id": alert_id, "device_id": "d1", "window_start": T0, "window_end": T0 + 60, "max": mx,
                "threshold": 90.0, "severity": "critical" if mx >= 100 else "warning", "created_at": created,
                "pane_index": pane, "updated_at": created}

    # The later pane arrives first; a rerun writes the first pane again, later.
    for rows in ([alert(1, 101.0, T0 + 200), alert(0, 91.0, T0 + 100), alert(0, 95.0, T0 + 100, "d1/w1")],
                 [alert(0, 91.0, T0 + 900)]):
        p = TestPipeline(runner=fn_runner.FnApiRunner(), options=PipelineOptions(
            [f"--temp_location={tmp_path}", f"--bigquery_endpoint={bigquery_emulator.host}"]))
        _ = p | beam.Create(rows) | WriteTable(url, SENSOR_ALERTS, keep_on_update=("created_at",), bigquery=_config(p))
        p.run().wait_until_finish()
    latest = _query(bigquery_emulator, "SELECT alert_id, max, severity, pane_index, UNIX_SECONDS(created_at) "
                                       f"FROM `{PROJECT}.alerts.sensor_alerts_latest`")
    assert latest == [("d1/w0", 101.0, "critical", 1, int(T0 + 100)), ("d1/w1", 95.0, "warning", 0, int(T0 + 100))]
