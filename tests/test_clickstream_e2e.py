"""End to end: the clickstream pipeline in batch and as a streaming replay, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kappaflow.core.schema import parse_timestamp
from kappaflow.core.schemas.clickstream import CLICKSTREAM_METRICS
from kappaflow.launcher import run
from kappaflow.samples.clickstream import SampleConfig, build_reference_db, write_sample
from kappaflow.tables import diff_tables, explain_difference, read_rows, too_late_records
from pipelines import clickstream

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sample(tmp_path, **overrides) -> tuple[str, str]:
    config = SampleConfig(**overrides)
    events, reference = str(tmp_path / "events.jsonl"), f"sqlite:///{tmp_path}/reference.db"
    write_sample(events, config)
    build_reference_db(reference, config)
    return events, reference


def _run(events: str, reference: str, output: str, *extra: str):
    return run(clickstream.PIPELINE, clickstream.build,
               [f"--input={events}", f"--reference_db={reference}", f"--output={output}", *extra],
               clickstream.ClickstreamOptions)


@pytest.mark.slow
def test_batch_equals_streaming_replay_when_lateness_covers_disorder(tmp_path):
    events, reference = _sample(tmp_path, events=3000, too_late_share=0.0)
    batch_db, stream_db = f"sqlite:///{tmp_path}/batch.db", f"sqlite:///{tmp_path}/stream.db"
    batch = _run(events, reference, batch_db)
    streaming = _run(events, reference, stream_db, "--streaming", "--replay_chunk_size=200")

    for acc in (batch, streaming):
        assert acc.balanced, acc
        assert acc.too_late == 0
        assert acc.invalid > 0 and acc.duplicates > 0
    assert (batch.read, batch.invalid, batch.duplicates, batch.aggregated) == (
        streaming.read, streaming.invalid, streaming.duplicates, streaming.aggregated)
    batch_rows, stream_rows = read_rows(batch_db, CLICKSTREAM_METRICS), read_rows(stream_db, CLICKSTREAM_METRICS)
    assert diff_tables(batch_rows, stream_rows).identical
    assert sum(r["events"] for r in batch_rows.values()) == batch.aggregated
    # A replay as fast as Prism goes fires no early (processing-time) panes; late panes replace rows.
    assert streaming.rows_written >= batch.rows_written


def too_late_by_file_order(events: str) -> set[str]:
    """Ids of the events whose window closed (end + allowed lateness) before the file's watermark
    reached them, computed here from the options' defaults, independently of the pipeline."""
    opts = clickstream.ClickstreamOptions([])
    windows, bound = opts.window_config(), opts.max_out_of_orderness_seconds
    size, lateness = windows.size_seconds, windows.allowed_lateness_seconds
    max_seen, late = None, set()
    with open(events, encoding="utf-8") as lines:
        for line in lines:
            try:
                event = json.loads(line)
                seconds = parse_timestamp(event["timestamp"])
            except (ValueError, KeyError, TypeError):
                continue
            window_end = (seconds // size + 1) * size
            if max_seen is not None and window_end + lateness <= max_seen - bound:
                late.add(event["event_id"])
            max_seen = seconds if max_seen is None else max(max_seen, seconds)
    return late


@pytest.mark.slow
def test_too_late_records_are_exactly_the_dead_letters(tmp_path):
    # One event per second over an hour; 2% arrive 25-50 minutes late, beyond the 15 min lateness.
    events, reference = _sample(tmp_path, events=3600, events_per_second=1.0, too_late_share=0.02)
    batch_db, stream_db = f"sqlite:///{tmp_path}/batch.db", f"sqlite:///{tmp_path}/stream.db"
    batch = _run(events, reference, batch_db)
    streaming = _run(events, reference, stream_db, "--streaming")

    assert batch.balanced and streaming.balanced
    assert batch.too_late == 0
    late = too_late_records(stream_db, clickstream.PIPELINE)
    # A replay judges lateness by the file's own watermark (the largest event time read before a
    # record, less --max_out_of_orderness_seconds): these are too late on every runner, at any pace.
    expected = too_late_by_file_order(events)
    assert expected and {letter["event_id"] for letter in late} >= expected, \
        "a record behind the file's watermark got through"
    # Too-late copies of one event share their dead-letter row (its id is deterministic).
    assert len(late) <= streaming.too_late <= len(late) + batch.duplicates
    batch_rows, stream_rows = read_rows(batch_db, CLICKSTREAM_METRICS), read_rows(stream_db, CLICKSTREAM_METRICS)
    if late:
        assert explain_difference(batch_rows, stream_rows, late)
    else:
        assert diff_tables(batch_rows, stream_rows).identical


@pytest.mark.slow
def test_cli_writes_tables_report_and_no_ip(tmp_path):
    events, reference = _sample(tmp_path, events=1500)
    output = f"sqlite:///{tmp_path}/out.db"
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.clickstream", f"--input={events}", f"--output={output}",
         f"--reference_db={reference}", f"--report={report}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "accounting balanced" in proc.stdout
    assert "FnApiRunner" in proc.stdout  # the runner that actually ran is named
    summary = json.loads(report.read_text())
    assert summary["balanced"] and summary["read"] == 1500 + summary["duplicates"]
    rows = read_rows(output, CLICKSTREAM_METRICS)
    assert sum(r["events"] for r in rows.values()) == summary["aggregated"]
    assert {r["country"] for r in rows.values()} >= {"unknown"}
    assert b"203.0." not in (tmp_path / "out.db").read_bytes()  # sample IPs are 203.0.x.y


@pytest.mark.slow
def test_directory_output_is_keyed_parquet(tmp_path):
    import pyarrow.parquet as pq

    events, reference = _sample(tmp_path, events=800)
    out_dir = tmp_path / "lake"
    acc = _run(events, reference, f"file://{out_dir}?format=parquet",
               f"--dead_letter_output=sqlite:///{tmp_path}/dl.db")
    files = sorted(out_dir.glob("clickstream_metrics/window_start=*/*.parquet"))
    assert files and len(files) == acc.rows_written
    total = sum(pq.ParquetFile(f).read().column("events").to_pylist()[0] for f in files)
    assert total == acc.aggregated
