"""WriteArchive: hive-partitioned Parquet per (partition, window); panes and reruns overwrite; the
file source reads it back."""

from __future__ import annotations

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue

from io_connectors.archive import WriteArchive, partition_path
from io_connectors.files import read_records
from kappaflow.core.schema import Field, FieldType, Schema
from transforms.windowing import WindowConfig

T = 1772409600.0  # 2026-03-02T00:00:00Z
SCHEMA = Schema(name="readings", partition_field="timestamp", fields=(
    Field("device_id", FieldType.STRING, required=True),
    Field("kind", FieldType.STRING, required=True),
    Field("day", FieldType.STRING, required=True),
    Field("timestamp", FieldType.TIMESTAMP, required=True),
    Field("value", FieldType.FLOAT64),
))
WINDOW = WindowConfig(size_seconds=3600, allowed_lateness_seconds=600, early_firing_seconds=None)


def reading(device, kind, seconds, value):
    day = "2026-03-02" if seconds < T + 86400 else "2026-03-03"
    return {"device_id": device, "kind": kind, "day": day, "timestamp": seconds, "value": value}


READINGS = [reading("d1", "temp", T + 10, 1.0), reading("d2", "temp", T + 5, 2.0),
            reading("d1", "temp", T + 3700, 3.0), reading("d3", "a b/c", T + 20, 4.0),
            reading("d1", "temp", T + 86400 + 1, 5.0)]


def archive(run, directory, stream_or_rows):
    def build(p):
        source = p | (stream_or_rows if isinstance(stream_or_rows, TestStream) else beam.Create(
            [TimestampedValue(r, r["timestamp"]) for r in stream_or_rows]))
        source | WriteArchive(str(directory), SCHEMA, ("day", "kind"), WINDOW)

    return run(build)


def contents(directory):
    return {str(f.relative_to(directory)): f.read_bytes() for f in sorted(directory.rglob("*")) if f.is_file()}


def test_layout_and_read_back(tmp_path, run_batch, count_of):
    result = archive(run_batch, tmp_path, READINGS)
    assert sorted(contents(tmp_path)) == [
        "day=2026-03-02/kind=a%20b%2Fc/20260302T000000Z.parquet",
        "day=2026-03-02/kind=temp/20260302T000000Z.parquet",
        "day=2026-03-02/kind=temp/20260302T010000Z.parquet",
        "day=2026-03-03/kind=temp/20260303T000000Z.parquet",
    ]
    assert count_of(result, "archive_rows_written") == 5 and count_of(result, "archive_files_written") == 4
    first = tmp_path / "day=2026-03-02/kind=temp/20260302T000000Z.parquet"
    assert pq.ParquetFile(first).read().column("device_id").to_pylist() == ["d2", "d1"]  # sorted by time, not arrival order
    back = [r.payload for path in sorted(tmp_path.glob("*/*/*.parquet")) for r in read_records(str(path))]
    assert sorted((r["device_id"], r["kind"], r["day"], r["timestamp"].timestamp(), r["value"]) for r in back) == \
        sorted((r["device_id"], r["kind"], r["day"], r["timestamp"], r["value"]) for r in READINGS)


def test_rerun_and_late_panes_rewrite_the_same_files(tmp_path, run_batch, run_streaming):
    archive(run_batch, tmp_path / "batch", READINGS)
    archive(run_batch, tmp_path / "batch", list(reversed(READINGS)))  # a rerun: same files, same bytes
    stream = (TestStream()
              .add_elements([TimestampedValue(r, r["timestamp"]) for r in READINGS[1:]])
              .advance_watermark_to(T + 3700)  # the first window fired on time
              .add_elements([TimestampedValue(READINGS[0], READINGS[0]["timestamp"])])  # a late one
              .advance_watermark_to_infinity())
    archive(run_streaming, tmp_path / "stream", stream)
    assert contents(tmp_path / "batch") == contents(tmp_path / "stream")
    assert not list(tmp_path.rglob("*.tmp"))


def test_partition_path_and_validation():
    assert partition_path(("a", "b"), ("x=y", "1/2")) == "a=x%3Dy/b=1%2F2"
    with pytest.raises(ValueError):
        WriteArchive("/tmp/x", SCHEMA, ("nope",), WINDOW)
    with pytest.raises(ValueError):
        WriteArchive("/tmp/x", SCHEMA, ("day",), WindowConfig(kind="session", size_seconds=60))
