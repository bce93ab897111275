"""Debezium changes into BigQuery with the SQL target's semantics: staged changes merged with a
versioned MERGE.

Per table and per run (batch) or per firing (streaming, every `--bigquery_firing_seconds`):
  changes staged as files under --temp_location (io_connectors/bigquery_loads.py)
  → images checked and typed as for SQL (io_connectors/change_tables.py: new columns are added
    with ALTER TABLE ADD COLUMN, a type conflict is a dead letter); the newest change per key wins
  → ONE load of those rows into a staging table `_kappaflow_stage_<table>_<id>` (expires in a day)
  → ONE `MERGE` that replaces a row only with a greater `_cdc_version`; a delete writes a tombstone
    (`_cdc_deleted`, other columns null), so an older change arriving later cannot bring it back.
BigQuery orders the writes, as the database does for the SQL target: arrival order, re-deliveries,
retries and reruns converge. A target table is clustered on its primary key; live rows:
`WHERE NOT _cdc_deleted`.

Outcomes are counted as for SQL (applied, superseded, duplicates, rejected) from one query of the
staged rows against the table before the MERGE. A firing's changes are held in memory by the
worker that merges that table.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any, Iterable, Iterator, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from io_connectors.bigquery import BigQueryLocation, BigQueryWriteConfig, bigquery_client
from io_connectors.bigquery_loads import StageForLoads, delete_staged, load_staged_files
from io_connectors.cdc_sink import Outcome, ReportOutcomes, newest_changes
from io_connectors.change_tables import DELETED, VERSION, ChangeTables
from kappaflow.core import metrics
from kappaflow.core.records import DEAD_LETTER_TAG
from kappaflow.core.retry import RetryPolicy
from kappaflow.core.schema import FieldType
from transforms.debezium import PrimaryKeys

__all__ = ["BigQueryChangeTables", "merge_changes", "merge_statement", "MergeStagedChangesFn",
           "ApplyChangesToBigQuery"]

_BIGQUERY_TYPES = {"INTEGER": FieldType.INT64, "FLOAT": FieldType.FLOAT64, "BOOLEAN": FieldType.BOOL,
                   "NUMERIC": FieldType.FLOAT64}
STAGING_PREFIX = "_kappaflow_stage_"


def _field_type(name: str, bigquery_type: str) -> FieldType:
    try:
        return _BIGQUERY_TYPES.get(bigquery_type) or FieldType(bigquery_type)
    except ValueError:
        raise ValueError(f"column {name} has type {bigquery_type}, which CDC does not write") from None


class BigQueryChangeTables(ChangeTables):
    """The CDC target tables of one dataset as this worker knows them, grown by DDL when needed."""

    def __init__(self, client: Any, location: BigQueryLocation, keys: PrimaryKeys) -> None:
        self._client = client
        self._location = location
        self._keys = keys
        self._columns = {}

    def table_id(self, table: str) -> str:
        return self._location.table_id(table)

    def schema(self, table: str, columns: dict[str, FieldType]) -> list[Any]:
        from google.cloud import bigquery

        return [*(bigquery.SchemaField(name, t.value) for name, t in columns.items()),
                bigquery.SchemaField(VERSION, "STRING", mode="REQUIRED",
                                     description="Version of the change that wrote the row."),
                bigquery.SchemaField(DELETED, "BOOL", mode="REQUIRED", description="A tombstone.")]

    def _reflect(self, table: str) -> dict[str, FieldType]:
        from google.api_core import exceptions

        try:
            found = self._client.get_table(self.table_id(table))
        except exceptions.NotFound:
            return {}
        names = {f.name for f in found.schema}
        if VERSION not in names or DELETED not in names:
            raise ValueError(f"table {self.table_id(table)} exists but is not a CDC target (no {VERSION}, {DELETED})")
        return {f.name: _field_type(f.name, f.field_type) for f in found.schema if f.name not in (VERSION, DELETED)}

    def _grow(self, table: str, columns: dict[str, FieldType], new: dict[str, FieldType]) -> None:
        from google.cloud import bigquery

        widened = {name: t for name, t in new.items() if name in columns and columns[name] is not t}
        if widened:  # integer columns → FLOAT64, a conversion BigQuery does in place
            changes = ", ".join(f"ALTER COLUMN `{name}` SET DATA TYPE {t.value}" for name, t in widened.items())
            self._client.query(f"ALTER TABLE `{self.table_id(table)}` {changes}").result(timeout=300)
            columns = dict(columns) | widened
        if not columns:
            key = self.key_of(table)
            ordered = {name: new[name] for name in key} | dict(new)
            definition = bigquery.Table(self.table_id(table), schema=self.schema(table, ordered))
            definition.clustering_fields = list(key[:4])  # BigQuery clusters on at most 4 columns
            definition.description = f"CDC replica of {table}: one row per key, tombstones for deletes."
            self._client.create_table(definition, exists_ok=True)  # another worker may have won
            columns = self._reflect(table)
        missing = {name: t for name, t in new.items() if name not in columns}
        if missing:  # IF NOT EXISTS: another worker may add the same column at the same time
            additions = ", ".join(f"ADD COLUMN IF NOT EXISTS `{name}` {t.value}" for name, t in missing.items())
            self._client.query(f"ALTER TABLE `{self.table_id(table)}` {additions}").result(timeout=300)
        self._columns[table] = dict(columns) | dict(missing)


def _json_line(columns: dict[str, FieldType], row: dict) -> bytes:
    values = {name: json.dumps(row[name], sort_keys=True) if t is FieldType.JSON and row[name] is not None
              else row[name] for name, t in columns.items()}
    values[VERSION], values[DELETED] = row[VERSION], row[DELETED]
    return json.dumps(values, sort_keys=True).encode("utf-8") + b"\n"


def merge_statement(target: str, staging: str, key: tuple[str, ...], columns: list[str]) -> str:
    """Replace a row only with a greater version; insert rows not yet there."""
    on = " AND ".join(f"T.`{k}` = S.`{k}`" for k in key)
    every = [*columns, VERSION, DELETED]
    updates = ", ".join(f"`{c}` = S.`{c}`" for c in every if c not in key)
    return (f"MERGE `{target}` T\n"
            f"USING (SELECT * FROM `{staging}` QUALIFY ROW_NUMBER() OVER "
            f"(PARTITION BY {', '.join(f'`{k}`' for k in key)} ORDER BY {VERSION} DESC) = 1) S\n"
            f"ON {on}\n"
            f"WHEN MATCHED AND S.{VERSION} > T.{VERSION} THEN UPDATE SET {updates}\n"
            f"WHEN NOT MATCHED THEN INSERT ({', '.join(f'`{c}`' for c in every)}) "
            f"VALUES ({', '.join(f'S.`{c}`' for c in every)})")


def _counts_query(target: str, staging: str, key: tuple[str, ...]) -> str:
    on = " AND ".join(f"T.`{k}` = S.`{k}`" for k in key)
    return (f"SELECT COUNTIF(T.{VERSION} IS NULL OR S.{VERSION} > T.{VERSION}) AS applied, "
            f"COUNTIF(S.{VERSION} = T.{VERSION}) AS duplicates, COUNT(*) AS staged "
            f"FROM `{staging}` S LEFT JOIN `{target}` T ON {on}")


def merge_changes(client: Any, tables: BigQueryChangeTables, table: str, changes: list[dict],
                  temp_dir: str) -> Outcome:
    """Apply changes of one table: one staging load and one MERGE. Returns each change's outcome
    (`applied` holds as many changes as the MERGE wrote rows)."""
    from google.cloud import bigquery

    columns, newest, outcome = newest_changes(tables, table, changes)
    if not newest:
        return outcome
    key = tables.key_of(table)
    target = tables.table_id(table)
    staging = tables.table_id(f"{STAGING_PREFIX}{table}_{uuid.uuid4().hex[:16]}")
    definition = bigquery.Table(staging, schema=tables.schema(table, columns))
    definition.expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)  # a crash leaves no litter
    client.create_table(definition)
    try:
        path = FileSystems.join(temp_dir, f"{STAGING_PREFIX}{uuid.uuid4().hex}.jsonl")
        with FileSystems.create(path) as handle:
            for _, row in newest.values():
                handle.write(_json_line(columns, row))
        try:
            load_staged_files(client, staging, [path], bigquery.LoadJobConfig(
                source_format="NEWLINE_DELIMITED_JSON", write_disposition="WRITE_TRUNCATE"), "kappaflow_stage")
        finally:
            delete_staged([path])
        (applied, duplicates, _), = client.query(_counts_query(target, staging, key)).result(timeout=300)
        client.query(merge_statement(target, staging, key, list(columns))).result(timeout=600)
    finally:
        client.delete_table(staging, not_found_ok=True)
    ordered = list(newest.values())  # which change is which outcome: only the numbers are known
    outcome.applied.extend(change for change, _ in ordered[:applied])
    outcome.duplicates.extend(change for change, _ in ordered[applied:applied + duplicates])
    outcome.superseded.extend(change for change, _ in ordered[applied + duplicates:])
    return outcome


def _read_changes(paths: Iterable[str]) -> Iterator[dict]:
    for path in paths:
        with FileSystems.open(path, compression_type="uncompressed") as handle:
            for line in handle:
                change = json.loads(line)
                change["key"] = tuple(change["key"])
                yield change


class MergeStagedChangesFn(beam.DoFn):
    """(table, staged change files) → one staging load and one MERGE; dead letters for rejects."""

    def __init__(self, location: BigQueryLocation, keys: PrimaryKeys, endpoint: Optional[str],
                 temp_location: str, retry: RetryPolicy) -> None:
        self._location = location
        self._keys = keys
        self._endpoint = endpoint
        self._temp_location = temp_location
        self._retry = retry
        self._report = ReportOutcomes()
        self._merges = Metrics.counter(metrics.NAMESPACE, "bigquery_merges")

    def setup(self) -> None:
        self._client = bigquery_client(self._location.project, self._endpoint)
        self._tables = BigQueryChangeTables(self._client, self._location, self._keys)

    def teardown(self) -> None:
        self._client.close()

    def process(self, element: tuple[str, Iterable[tuple[str, int]]]) -> Iterator[Any]:
        table, staged = element
        paths = sorted(path for path, _ in staged)
        changes = list(_read_changes(paths))
        outcome = self._retry.call(f"merging {len(changes)} changes into {table}", lambda: merge_changes(
            self._client, self._tables, table, changes, self._temp_location))
        self._merges.inc()
        yield from self._report(outcome)
        delete_staged(paths)


def _staged_line(change: dict) -> tuple[str, bytes]:
    return change["table"], json.dumps(change, sort_keys=True, default=str).encode("utf-8") + b"\n"


class ApplyChangesToBigQuery(beam.PTransform):
    """Changes → merged into their tables in dataset `url` (bigquery:PROJECT.DATASET); returns dead letters."""

    def __init__(self, url: str, keys: PrimaryKeys, config: Optional[BigQueryWriteConfig] = None,
                 retry: RetryPolicy = RetryPolicy()) -> None:
        super().__init__()
        self._location = BigQueryLocation.parse(url, with_table=False)
        self._keys = keys
        self._config = config or BigQueryWriteConfig()
        self._retry = retry

    def expand(self, changes: beam.PCollection) -> beam.PCollection:
        config = self._config
        if not config.temp_location:
            raise ValueError("--temp_location is required: CDC into BigQuery stages changes there")
        merged = (
            changes
            | "ToLines" >> beam.Map(_staged_line)
            | "Stage" >> StageForLoads(config.temp_location, config.streaming, config.firing_seconds,
                                       config.files_per_firing)
            | "MergePerTable" >> beam.ParDo(MergeStagedChangesFn(
                self._location, self._keys, config.endpoint, config.temp_location, self._retry,
            )).with_outputs(DEAD_LETTER_TAG, main="merged")
        )
        return merged[DEAD_LETTER_TAG]
