"""`--bigquery_method=STORAGE_WRITE_API` for real: Beam's Java Storage Write sink, expanded by
kappaflow's expansion service and run by Java workers on Prism, appends over gRPC to the emulator's
Storage Write API (through the `bigquery_front`: Beam's Java client dials one endpoint, with TLS).

What the consumers read must be as for the other methods: tables partitioned and clustered from the
schema declaration, `_latest` views, and the accounting's `rows written` equal to the rows there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fixtures_bigquery import PROJECT
from kappaflow.samples.clickstream import SampleConfig, build_reference_db, write_sample

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _query(emulator, sql: str) -> list[tuple]:
    client = emulator.client()
    try:
        return [tuple(row.values()) for row in client.query(sql).result()]
    finally:
        client.close()


# Streaming exactly-once Storage Write shards its rows with Beam's `sharded_key` coder, which Prism
# 2.70 cannot build ("prism error building stage ...: unknown coder urn key: beam:coder:sharded_key:v1",
# with auto-sharding or a fixed stream count alike). Strict: once Prism runs it, this fails, and the
# streaming default (streaming inserts, docs/bigquery.md) should become the Storage Write API.
_PRISM_STREAMING = pytest.mark.xfail(strict=True, raises=AssertionError,
                                     reason="Prism 2.70 has no beam:coder:sharded_key:v1")


@pytest.mark.slow
@pytest.mark.parametrize("streaming", [False, pytest.param(True, marks=_PRISM_STREAMING)], ids=["batch", "replay"])
def test_clickstream_through_the_storage_write_api_lands_in_bigquery(bigquery_emulator, bigquery_front, tmp_path,
                                                                     streaming):
    dataset = f"storage_write_{'replay' if streaming else 'batch'}"
    url = bigquery_emulator.dataset(dataset)
    events, reference = str(tmp_path / "events.jsonl"), f"sqlite:///{tmp_path}/reference.db"
    config = SampleConfig(events=300)
    write_sample(events, config)
    build_reference_db(reference, config)
    report = tmp_path / "run.json"
    # The Java workers are started by the run (a new process) and trust the front's certificate.
    env = {**os.environ, "JAVA_TOOL_OPTIONS": bigquery_front.java_tool_options()}
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.clickstream", f"--input={events}", f"--output={url}",
         f"--reference_db={reference}", f"--temp_location={tmp_path}", f"--report={report}",
         f"--bigquery_endpoint=localhost:{bigquery_front.port}", "--bigquery_method=STORAGE_WRITE_API",
         "--runner=PrismRunner", *(["--streaming", "--bigquery_firing_seconds=2"] if streaming else [])],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    accounting = json.loads(report.read_text())
    assert accounting["balanced"] and accounting["rows_written"] > 0 and accounting["invalid"] > 0

    metrics = f"`{PROJECT}.{dataset}.clickstream_metrics`"
    # Exactly-once: every row handed to the sink is there once (batch: pending streams committed at
    # the end; streaming: buffered streams flushed per firing).
    assert _query(bigquery_emulator, f"SELECT COUNT(*) FROM {metrics}") == [(accounting["rows_written"],)]
    (events_in_view, keys), = _query(
        bigquery_emulator, f"SELECT SUM(events), COUNT(*) FROM `{PROJECT}.{dataset}.clickstream_metrics_latest`")
    assert events_in_view == accounting["aggregated"] and 0 < keys <= accounting["rows_written"]
    assert _query(bigquery_emulator, f"SELECT COUNT(*) FROM `{PROJECT}.{dataset}.dead_letters_latest`") == [
        (accounting["dead_letters_written"],)]

    client = bigquery_emulator.client()
    try:
        table = client.get_table(f"{PROJECT}.{dataset}.clickstream_metrics")
    finally:
        client.close()
    assert table.time_partitioning.field == "window_start"
    assert table.clustering_fields == ["event_type", "country"]
