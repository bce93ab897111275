"""End to end: the IoT sensors pipeline in batch, as a streaming replay, from its own archive, and
from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from kappaflow.core.schemas.iot import SENSOR_ALERTS, SENSOR_STATS
from kappaflow.launcher import run
from kappaflow.samples.iot import SampleConfig, build_reference_db, devices, write_sample
from kappaflow.tables import PANE_COLUMNS, diff_tables, read_rows
from pipelines import iot_sensors

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T = 1772431200.0  # 2026-03-02T06:00:00Z


def _sample(tmp_path, **overrides) -> tuple[str, str]:
    config = SampleConfig(**overrides)
    readings, reference = str(tmp_path / "readings.jsonl"), f"sqlite:///{tmp_path}/reference.db"
    write_sample(readings, config)
    build_reference_db(reference, config)
    return readings, reference


def _run(readings: str, reference: str, output: str, *extra: str):
    return run(iot_sensors.PIPELINE, iot_sensors.build,
               [f"--input={readings}", f"--reference_db={reference}", f"--output={output}", *extra],
               iot_sensors.IotSensorsOptions)


def _alerts(url: str) -> dict:
    # created_at says when a run first raised it: it differs between runs by design.
    return {k: {c: v for c, v in r.items() if c != "created_at"} for k, r in read_rows(url, SENSOR_ALERTS).items()}


def _archive_rows(directory) -> list[dict]:
    return [r for f in sorted(directory.glob("*/*/*.parquet")) for r in pq.ParquetFile(f).read().to_pylist()]


@pytest.mark.slow
def test_batch_equals_streaming_replay_and_the_archive_replays_to_the_same_stats(tmp_path):
    readings, reference = _sample(tmp_path, readings=3000)
    urls = {name: f"sqlite:///{tmp_path}/{name}.db" for name in ("batch", "stream", "lake")}
    common = ("--ingest_time_field=ingest_time",)
    batch = _run(readings, reference, urls["batch"], *common, f"--archive={tmp_path}/archive_b")
    streaming = _run(readings, reference, urls["stream"], *common, f"--archive={tmp_path}/archive_s",
                     "--streaming", "--replay_chunk_size=100")

    for acc in (batch, streaming):
        assert acc.balanced, acc
        assert acc.too_late == 0 and acc.enrich_failed == 0
        assert acc.invalid > 0 and acc.duplicates > 0 and acc.excluded > 0
    assert (batch.read, batch.invalid, batch.duplicates, batch.excluded, batch.aggregated) == (
        streaming.read, streaming.invalid, streaming.duplicates, streaming.excluded, streaming.aggregated)
    stats = read_rows(urls["batch"], SENSOR_STATS)
    assert diff_tables(stats, read_rows(urls["stream"], SENSOR_STATS)).identical
    alerts = _alerts(urls["batch"])
    assert alerts and diff_tables(alerts, _alerts(urls["stream"])).identical
    assert sum(r["count"] for r in stats.values()) == batch.aggregated
    # A replay as fast as Prism goes fires no early (processing-time) panes; late panes, when
    # there are any, replace rows: so at least as many writes as batch, and the same table.
    assert streaming.rows_written >= batch.rows_written
    # Exactly the over-threshold temperature windows have an alert (one each, whatever their panes).
    fleet = {d.device_id: d for d in devices(SampleConfig(readings=3000))}
    assert {(a["device_id"], a["window_start"]) for a in alerts.values()} == {
        (r["device_id"], r["window_start"]) for r in stats.values()
        if fleet[r["device_id"]].device_type == "temperature" and r["max"] > fleet[r["device_id"]].max_temp_c}
    assert len(alerts) > 5 and {a["severity"] for a in alerts.values()} == {"warning", "critical"}

    # The archive: the same files from both modes; skewed clocks corrected; units converted.
    archived = _archive_rows(tmp_path / "archive_b")
    assert archived == _archive_rows(tmp_path / "archive_s")
    assert len(archived) == batch.excluded + batch.aggregated
    corrected = [r for r in archived if r["clock_corrected"]]
    assert corrected and all(r["timestamp"] == r["ingest_time"] for r in corrected)
    assert any(r["device_timestamp"] is None for r in corrected)  # missing device time
    assert {r["unit"] for r in archived} == {"celsius", "hPa", "percent"}
    # Read back through the pipeline (as a later replay would), the archive gives the same stats.
    lake = _run(f"{tmp_path}/archive_b/*/*/*.parquet", reference, urls["lake"], *common)
    assert lake.balanced and (lake.read, lake.invalid, lake.duplicates) == (len(archived), 0, 0)
    assert diff_tables(stats, read_rows(urls["lake"], SENSOR_STATS)).identical
    assert diff_tables(alerts, _alerts(urls["lake"])).identical


def _line(device: str, seconds: float, value: float, unit: str = "celsius") -> str:
    return json.dumps({"device_id": device, "device_type": "temperature", "timestamp": int(seconds * 1000),
                       "value": value, "unit": unit, "quality": "good", "location": {"facility": "f", "line": "l"}})


@pytest.mark.slow
def test_a_late_pane_updates_the_alert_without_a_second_one(tmp_path):
    # hot-1 (not in the registry: threshold 90 °C) is over threshold in window [T, T+10); after the
    # on-time pane a late reading (within the 60 s lateness) raises the max: same alert, updated.
    lines = [_line("hot-1", T + 1, 95.0)]
    lines += [_line("tick", T + s, 20.0) for s in range(2, 50, 2)]  # the watermark passes T+10, not T+70
    lines += [_line("hot-1", T + 2, 248.0, unit="fahrenheit")]  # 120 °C, late
    lines += [_line("tick", T + s, 20.0) for s in range(50, 150, 2)]
    readings = tmp_path / "readings.jsonl"
    readings.write_text("\n".join(lines) + "\n", encoding="utf-8")
    reference = f"sqlite:///{tmp_path}/reference.db"
    build_reference_db(reference, SampleConfig(devices=1, registered_share=0.0))
    output = f"sqlite:///{tmp_path}/out.db"
    acc = _run(str(readings), reference, output, "--streaming", "--replay_chunk_size=4",
               "--max_out_of_orderness_seconds=5")
    assert acc.balanced and acc.too_late == 0 and acc.aggregated == len(lines)

    engine = sa.create_engine(output)
    with engine.connect() as conn:
        alerts = conn.exec_driver_sql(
            "SELECT alert_id, max, threshold, severity, created_at FROM sensor_alerts").all()
        stats = conn.exec_driver_sql("SELECT max, pane_timing, pane_index, updated_at FROM sensor_stats "
                                     "WHERE device_id = 'hot-1'").one()
    engine.dispose()
    assert stats[:3] == (pytest.approx(120.0), "LATE", 1)
    ((alert_id, mx, threshold, severity, created_at),) = alerts
    assert (alert_id, mx, threshold, severity) == ("hot-1/2026-03-02T06:00:00.000000Z", pytest.approx(120.0),
                                                   90.0, "critical")
    # One alert row, kept across panes (created_at stays from its first insert: tests/test_sql_sink.py).
    assert created_at is not None


@pytest.mark.slow
def test_cli_run(tmp_path):
    readings, reference = _sample(tmp_path, readings=1500)
    output, report = f"sqlite:///{tmp_path}/out.db", tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.iot_sensors", f"--input={readings}", f"--output={output}",
         f"--reference_db={reference}", "--ingest_time_field=ingest_time", f"--archive={tmp_path}/archive",
         f"--report={report}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "accounting balanced" in proc.stdout and "Unparseable argument" not in proc.stderr
    summary = json.loads(report.read_text())
    assert summary["balanced"] and summary["excluded"] > 0
    assert summary["read"] == summary["invalid"] + summary["duplicates"] + summary["excluded"] + summary["aggregated"]
    stats = read_rows(output, SENSOR_STATS)
    assert sum(r["count"] for r in stats.values()) == summary["aggregated"]
    assert all(r["window_end"] - r["window_start"] == 10 for r in stats.values())
    assert {r["facility"] for r in stats.values()} <= {"plant-a", "plant-b", "plant-c"}
    engine = sa.create_engine(output)
    with engine.connect() as conn:
        stages = dict(conn.exec_driver_sql("SELECT stage, count(*) FROM dead_letters GROUP BY stage").all())
    engine.dispose()
    assert set(stages) == {"parse", "units"} and sum(stages.values()) <= summary["invalid"]
    assert list((tmp_path / "archive").glob("event_date=2026-03-02/device_type=temperature/*.parquet"))
    assert set(PANE_COLUMNS) <= set(SENSOR_STATS.field_names)
