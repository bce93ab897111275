"""Directory sink: one file per row key, partitioned by date, so later panes and reruns overwrite
the same file instead of appending (JSONL, Parquet or Avro).

Layout: <dir>/<table>/<partition field>=YYYY-MM-DD/<key hash>.<ext>. One file per key keeps the
sink idempotent at the price of many small files: meant for local runs and small tables; use SQL or
BigQuery for large ones.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from typing import Iterator, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from kappaflow.core import metrics
from kappaflow.core.schema import Schema, format_timestamp, parse_timestamp

__all__ = ["WriteKeyedFiles", "WriteKeyedFileFn", "DIRECTORY_FORMATS"]

DIRECTORY_FORMATS = ("jsonl", "parquet", "avro")


class WriteKeyedFileFn(beam.DoFn):
    def __init__(
        self, directory: str, schema: Schema, table: str, fmt: str, counter: str,
        keep_on_update: Sequence[str] = (),
    ) -> None:
        self._directory = directory.rstrip("/")
        self._schema = schema
        self._table = table
        self._fmt = fmt
        self._keep = tuple(keep_on_update)
        self._written = Metrics.counter(metrics.NAMESPACE, counter)

    def process(self, row: dict) -> Iterator[str]:
        schema = self._schema
        key = "\x1f".join(str(row[k]) for k in schema.key)
        name = hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]
        partition = "all"
        if schema.partition_field and row.get(schema.partition_field) is not None:
            day = dt.datetime.fromtimestamp(row[schema.partition_field], dt.timezone.utc).date()
            partition = f"{schema.partition_field}={day.isoformat()}"
        path = f"{self._directory}/{self._table}/{partition}/{name}.{self._fmt}"
        if self._keep and FileSystems.exists(path):
            row = {**row, **{c: self._stored(path)[c] for c in self._keep}}
        with FileSystems.create(path) as handle:
            handle.write(self._encode(row))
        self._written.inc()
        yield path

    def _stored(self, path: str) -> dict:
        """The row stored at `path`, timestamps as epoch seconds (as rows travel)."""
        with FileSystems.open(path, compression_type="uncompressed") as handle:
            data = handle.read()
        if self._fmt == "jsonl":
            stored = json.loads(data)
        elif self._fmt == "avro":
            import fastavro

            stored = next(iter(fastavro.reader(io.BytesIO(data))))
        else:
            import pyarrow.parquet as pq

            stored = pq.read_table(io.BytesIO(data)).to_pylist()[0]
        for f in self._schema.fields:
            if f.type.value == "TIMESTAMP" and stored.get(f.name) is not None:
                stored[f.name] = parse_timestamp(stored[f.name])
        return stored

    def _encode(self, row: dict) -> bytes:
        if self._fmt == "jsonl":
            out = {}
            for f in self._schema.fields:
                value = row.get(f.name)
                if value is not None and f.type.value == "TIMESTAMP":
                    value = format_timestamp(value)
                out[f.name] = value
            return (json.dumps(out, sort_keys=True, default=str) + "\n").encode("utf-8")
        stored = self._schema.to_storage_row(row)
        buffer = io.BytesIO()
        if self._fmt == "avro":
            import fastavro

            fastavro.writer(buffer, fastavro.parse_schema(self._schema.avro_schema()), [stored])
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist([stored], schema=self._schema.arrow_schema()), buffer)
        return buffer.getvalue()


class WriteKeyedFiles(beam.PTransform):
    """Rows → one file per key; `keep_on_update` columns keep the value of the first write."""

    def __init__(
        self, directory: str, schema: Schema, table: str, fmt: str, counter: str,
        keep_on_update: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if fmt not in DIRECTORY_FORMATS:
            raise ValueError(f"directory format must be one of {DIRECTORY_FORMATS}")
        if not schema.key:
            raise ValueError(f"schema {schema.name} has no key: the directory sink needs one")
        self._fn = WriteKeyedFileFn(directory, schema, table, fmt, counter, keep_on_update)

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        return rows | "WriteFiles" >> beam.ParDo(self._fn)
