"""Raw archive: records as Parquet in a hive-partitioned data lake, idempotently.

Layout: DIR/<p1>=<v1>/<p2>=<v2>/<window start>.parquet, e.g.
    archive/event_date=2026-01-05/device_type=temperature/20260105T080000Z.parquet
The partition values are also columns of the files, so a reader that ignores directory names
(`--input='archive/*/*/*.parquet'`) still has them.

Records are grouped per partition and event-time window; the file of a (partition, window) is named
after them, not after its content, and holds every record of the window sorted. Panes accumulate,
so a late pane rewrites the file with a superset; a rerun or a replay of the same input rewrites it
with the same bytes. A file is written under a temporary name and then renamed, so readers never see
half a file. One run owns the windows it writes: a run over other records of the same window
replaces the file.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import urllib.parse
import uuid
from typing import Any, Iterable, Iterator, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from kappaflow.core import metrics
from kappaflow.core.schema import Schema
from transforms.windowing import WindowConfig

__all__ = ["WriteArchive", "WriteArchiveFileFn", "partition_path"]

def partition_path(fields: Sequence[str], values: Sequence[Any]) -> str:
    """Hive-style directories; values are percent-encoded so any text is one safe path segment."""
    return "/".join(f"{f}={urllib.parse.quote(str(v), safe='')}" for f, v in zip(fields, values))


class WriteArchiveFileFn(beam.DoFn):
    def __init__(self, directory: str, schema: Schema, partition_fields: Sequence[str]) -> None:
        self._directory = directory.rstrip("/")
        self._schema = schema
        self._partition_fields = tuple(partition_fields)
        self._files = Metrics.counter(metrics.NAMESPACE, "archive_files_written")
        self._rows = Metrics.counter(metrics.NAMESPACE, "archive_rows_written")

    def process(self, element: tuple[tuple, Iterable[dict]], window=beam.DoFn.WindowParam) -> Iterator[str]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        values, rows = element
        # Sorted by time (the schema's partition field), then on every column: the same records
        # give the same file, whatever the arrival order.
        time_field = self._schema.partition_field
        ordered = sorted(rows, key=lambda r: (
            r.get(time_field) if time_field else 0,
            json.dumps([r.get(f) for f in self._schema.field_names], default=str)))
        table = pa.Table.from_pylist([self._schema.to_storage_row(r) for r in ordered],
                                     schema=self._schema.arrow_schema())
        start = dt.datetime.fromtimestamp(window.start.micros / 1e6, dt.timezone.utc)
        name = start.strftime("%Y%m%dT%H%M%SZ")
        path = f"{self._directory}/{partition_path(self._partition_fields, values)}/{name}.parquet"
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        temporary = f"{path}.{uuid.uuid4().hex}.tmp"
        with FileSystems.create(temporary) as handle:
            handle.write(buffer.getvalue())
        FileSystems.rename([temporary], [path])
        self._files.inc()
        self._rows.inc(len(ordered))
        yield path


class WriteArchive(beam.PTransform):
    """Timestamped rows of `schema` → Parquet files per (partition values, window); returns paths.

    `window` should keep state as long as the windows of the statistics (same lateness and margin)
    and have no early panes: each pane rewrites a whole file.
    """

    def __init__(
        self, directory: str, schema: Schema, partition_fields: Sequence[str], window: WindowConfig
    ) -> None:
        super().__init__()
        missing = [f for f in partition_fields if f not in schema.field_names]
        if not partition_fields or missing:
            raise ValueError(f"archive partition fields must be fields of {schema.name}: {missing}")
        if window.kind != "fixed" or not window.accumulating:
            raise ValueError("the archive needs fixed, accumulating windows: a pane rewrites its file")
        self._directory = directory
        self._schema = schema
        self._partition_fields = tuple(partition_fields)
        self._window = window

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        fields = self._partition_fields
        return (
            rows
            | "Window" >> self._window.window_into()
            | "KeyByPartition" >> beam.Map(lambda r: (tuple(str(r[f]) for f in fields), r))
            | "GroupPerWindow" >> beam.GroupByKey()
            | "WriteFiles" >> beam.ParDo(WriteArchiveFileFn(self._directory, self._schema, fields))
        )
