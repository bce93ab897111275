"""Choose a sink from a URL: any SQLAlchemy URL upserts into a database table;
`bigquery:PROJECT.DATASET` appends to a BigQuery table with a `_latest` view; `file://DIR`,
a bare directory path or `gs://...` writes keyed files (`?format=jsonl|parquet|avro`)."""

from __future__ import annotations

import urllib.parse
from typing import Optional, Sequence

import apache_beam as beam

from io_connectors.bigquery import BigQueryWriteConfig, WriteToBigQueryTable, is_bigquery_url
from io_connectors.file_sink import DIRECTORY_FORMATS, WriteKeyedFiles
from io_connectors.sql_sink import UpsertToDatabase, check_kept_columns
from kappaflow.core import metrics
from kappaflow.core.schema import Schema

__all__ = ["WriteTable", "is_database_url"]


def is_database_url(url: str) -> bool:
    if is_bigquery_url(url):
        return False
    scheme = url.split("://", 1)[0] if "://" in url else ""
    return bool(scheme) and scheme not in ("file", "gs", "s3")


class WriteTable(beam.PTransform):
    """Rows → the table `schema.name` at `url`; returns the sink's Rejections (maybe none).

    `keep_on_update`: columns written when a key is first stored and never changed by later
    upserts (e.g. an alert's `created_at`). `bigquery`: how a bigquery: URL is written.
    """

    def __init__(
        self, url: str, schema: Schema, counter: str = metrics.ROWS_WRITTEN,
        table: Optional[str] = None, keep_on_update: Sequence[str] = (),
        bigquery: Optional[BigQueryWriteConfig] = None,
    ) -> None:
        super().__init__()
        check_kept_columns(schema, keep_on_update)
        self._url = url
        self._schema = schema
        self._counter = counter
        self._table = table or schema.name
        self._keep = tuple(keep_on_update)
        self._bigquery = bigquery

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        if is_bigquery_url(self._url):
            return rows | WriteToBigQueryTable(self._url, self._schema, self._table, self._counter,
                                               keep_on_update=self._keep, config=self._bigquery)
        if is_database_url(self._url):
            return rows | UpsertToDatabase(
                self._url, self._schema, self._table, counter=self._counter,
                keep_on_update=self._keep,
            )
        directory, fmt = _directory_and_format(self._url)
        rows | WriteKeyedFiles(directory, self._schema, self._table, fmt, self._counter, self._keep)
        return rows.pipeline | "NoSinkDeadLetters" >> beam.Create([])


def _directory_and_format(url: str) -> tuple[str, str]:
    parsed = urllib.parse.urlsplit(url)
    fmt = urllib.parse.parse_qs(parsed.query).get("format", ["jsonl"])[0]
    if fmt not in DIRECTORY_FORMATS:
        raise ValueError(f"{url}: format must be one of {DIRECTORY_FORMATS}")
    if parsed.scheme == "file":
        return parsed.path, fmt
    base = url.split("?", 1)[0]
    return base, fmt
