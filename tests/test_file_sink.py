"""WriteKeyedFiles: one file per key, later writes replace it, insert-only columns keep their value."""

from __future__ import annotations

import json

import apache_beam as beam
import pyarrow.parquet as pq
import pytest

from io_connectors.file_sink import WriteKeyedFiles
from kappaflow.core.schema import Field, FieldType, Schema

T0 = 1704067200.0
ALERTS = Schema(name="alerts", key=("alert_id",), partition_field="created_at", fields=(
    Field("alert_id", FieldType.STRING, required=True),
    Field("max", FieldType.FLOAT64, required=True),
    Field("created_at", FieldType.TIMESTAMP, required=True),
))


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "avro"])
def test_keep_on_update_in_keyed_files(tmp_path, run_batch, fmt):
    def write(rows):
        run_batch(lambda p: p | beam.Create(rows) | WriteKeyedFiles(
            str(tmp_path), ALERTS, "alerts", fmt, "rows_written", keep_on_update=("created_at",)))

    write([{"alert_id": "a", "max": 91.0, "created_at": T0}])
    write([{"alert_id": "a", "max": 99.0, "created_at": T0 + 60}])
    (path,) = tmp_path.glob(f"alerts/*/*.{fmt}")
    assert path.parent.name == "created_at=2024-01-01"
    if fmt == "jsonl":
        assert json.loads(path.read_text()) == {"alert_id": "a", "max": 99.0, "created_at": "2024-01-01T00:00:00.000000Z"}
    elif fmt == "parquet":
        row = pq.ParquetFile(path).read().to_pylist()[0]
        assert (row["max"], row["created_at"].timestamp()) == (99.0, T0)
    else:
        import fastavro

        with open(path, "rb") as handle:
            row = next(iter(fastavro.reader(handle)))
        assert (row["max"], row["created_at"].timestamp()) == (99.0, T0)
