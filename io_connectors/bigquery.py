"""BigQuery: write the pipeline's tables into a dataset, read a table as input (backfills).

`--output=bigquery:PROJECT.DATASET` writes each table under its SQL name. Tables are created from
the schema declaration: column and table descriptions, `DATE(partition_field)` partitioning,
clustering on the cluster fields. Rows are appended; a `<table>_latest` view keeps the latest pane
per key (highest `pane_index`, then newest `updated_at`), so reruns and later panes converge for
consumers exactly as the SQL upsert does.

Write methods (the runtime resolves `--bigquery_method=AUTO` to one of them, kappaflow/wiring.py):
- batch (and `--bigquery_method=FILE_LOADS`): rows are checked against the schema (a row that does
  not fit is a dead letter naming the field), staged as newline-delimited JSON under
  `--temp_location`, and each table gets ONE load job per run, or per firing every
  `--bigquery_firing_seconds` in streaming (io_connectors/bigquery_loads.py): load jobs have a
  daily quota per table;
- streaming where the Storage Write API cannot run (see below): streaming inserts with insertId = row key + pane index (BigQuery drops a retried
  insert it has seen; correctness does not rely on it: the view dedups by key). A failed request
  is retried with backoff, then its rows are sent one by one; a row BigQuery still rejects goes to
  the dead letters with BigQuery's error;
- `--bigquery_method=STORAGE_WRITE_API`: Beam's Storage Write API sink, exactly-once, a Java
  transform (kappaflow's expansion service and Java workers: Prism or Flink), and the streaming
  default on Flink from a live source. The table and its view are created here first, as for the
  other methods.

`--bigquery_endpoint` or `BIGQUERY_EMULATOR_HOST` (host:port) points at a local BigQuery API
server, with anonymous credentials.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics

from io_connectors.batched_write import SinkCounters, WriteInBatchesFn
from io_connectors.bigquery_client import bigquery_client
from io_connectors.bigquery_loads import LoadStagedFilesFn, StageForLoads
from kappaflow.core import metrics
from kappaflow.core.records import BOUNDED_WATERMARK, DEAD_LETTER_TAG, RawRecord, Rejection, payload_text
from kappaflow.core.retry import RetryPolicy, brief_error
from kappaflow.core.schema import Field, FieldType, Schema, ValidationError, format_timestamp

__all__ = [
    "BigQueryLocation", "is_bigquery_url", "bigquery_client", "table_definition", "latest_view_query",
    "to_bigquery_row", "insert_id", "BigQueryWriteConfig", "WriteToBigQueryTable", "WriteRowsToBigQueryFn",
    "ToLoadLinesFn", "ReadBigQueryRows", "check_bigquery", "java_options", "storage_write_schema",
    "PrepareStorageWriteFn", "FailedWriteToDeadLetterFn",
]

PREFIX = "bigquery:"
_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")
METHODS = ("AUTO", "FILE_LOADS", "STREAMING_INSERTS", "STORAGE_WRITE_API")


def is_bigquery_url(url: Optional[str]) -> bool:
    return bool(url) and url.startswith(PREFIX)


@dataclasses.dataclass(frozen=True)
class BigQueryLocation:
    """`bigquery:PROJECT.DATASET` (an output) or `bigquery:PROJECT.DATASET.TABLE` (an input)."""

    project: str
    dataset: str
    table: Optional[str] = None

    def __post_init__(self) -> None:
        for part in filter(None, (self.project, self.dataset, self.table)):
            if not _NAME.match(part):
                raise ValueError(f"bad BigQuery name {part!r}")

    @classmethod
    def parse(cls, url: str, with_table: bool) -> "BigQueryLocation":
        parts = url[len(PREFIX):].split(".") if is_bigquery_url(url) else []
        if len(parts) != (3 if with_table else 2):
            form = "PROJECT.DATASET.TABLE" if with_table else "PROJECT.DATASET"
            raise ValueError(f"{url!r}: expected bigquery:{form}")
        return cls(*parts)

    def table_id(self, table: Optional[str] = None) -> str:
        return f"{self.project}.{self.dataset}.{table or self.table}"


def table_definition(schema: Schema, table_id: str) -> Any:
    from google.cloud import bigquery

    table = bigquery.Table(table_id, schema=[bigquery.SchemaField.from_api_repr(f) for f in schema.bigquery_schema()])
    table.description = schema.description or None
    if schema.partition_field:
        table.time_partitioning = bigquery.TimePartitioning(type_="DAY", field=schema.partition_field)
    if schema.cluster_fields:
        table.clustering_fields = list(schema.cluster_fields)
    return table


def latest_view_query(schema: Schema, table_id: str, keep: Sequence[str] = ()) -> str:
    """One row per key: the latest pane wins (highest `pane_index`, then newest `updated_at`); the
    `keep` columns (written once, like an alert's `created_at`) come from the key's first pane."""
    latest = [f"{name} DESC" for name in ("pane_index", "updated_at") if name in schema.field_names]
    if not latest and schema.partition_field:
        latest = [f"{schema.partition_field} DESC"]
    keys = ", ".join(schema.key)
    order = ", ".join(latest) or keys
    first = ", ".join(name for name in ("pane_index", "updated_at") if name in schema.field_names) or keys
    kept = "".join(f", FIRST_VALUE({c}) OVER (PARTITION BY {keys} ORDER BY {first}) AS _first_{c}" for c in keep)
    columns = ", ".join(f"_first_{f} AS {f}" if f in keep else f for f in schema.field_names)
    return (f"SELECT {columns} FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY {keys} ORDER BY {order}) "
            f"AS _latest_rank{kept} FROM `{table_id}`) WHERE _latest_rank = 1")


def ensure_table_and_view(client: Any, schema: Schema, table_id: str, keep: Sequence[str] = ()) -> None:
    """Create the table from the schema declaration, or add the columns it lacks (never drops one);
    create or replace the `_latest` view when its query changed."""
    from google.api_core import exceptions
    from google.cloud import bigquery

    table = client.create_table(table_definition(schema, table_id), exists_ok=True)
    present = {f.name for f in table.schema}
    missing = [f for f in schema.bigquery_schema() if f["name"] not in present]
    if missing:  # new optional fields of the declaration; IF NOT EXISTS: other workers may race
        additions = ", ".join(f"ADD COLUMN IF NOT EXISTS {f['name']} {f['type']}" for f in missing)
        client.query(f"ALTER TABLE `{table_id}` {additions}").result(timeout=300)
    query = latest_view_query(schema, table_id, keep)
    try:
        if client.get_table(f"{table_id}_latest").view_query == query:
            return
        client.delete_table(f"{table_id}_latest")
    except exceptions.NotFound:
        pass
    view = bigquery.Table(f"{table_id}_latest")
    view.view_query = query
    view.description = f"Latest pane per key of {table_id.rsplit('.', 1)[-1]}."
    client.create_table(view, exists_ok=True)


def _json_value(f: Field, value: Any) -> Any:
    if value is None:
        return None
    if f.type is FieldType.TIMESTAMP:
        return format_timestamp(value)
    if f.type is FieldType.JSON:
        return json.dumps(value, sort_keys=True, default=str)
    if f.type is FieldType.RECORD:
        return {sub.name: _json_value(sub, value.get(sub.name)) for sub in f.fields}
    return value


def to_bigquery_row(schema: Schema, row: dict) -> dict:
    """Row → BigQuery JSON row (timestamps as RFC 3339 text); extra keys are dropped."""
    return {f.name: _json_value(f, row.get(f.name)) for f in schema.fields}


def insert_id(schema: Schema, row: dict) -> str:
    """Row key + pane index: a retried insert of the same pane has the same id."""
    key = "|".join(str(to_bigquery_row(schema, row)[k]) for k in schema.key)
    return f"{key}#{row.get('pane_index', 0)}"


class _Rejected(Exception):
    """BigQuery rejected these rows (index → error); the others of the request were written."""

    def __init__(self, errors: dict[int, str]) -> None:
        super().__init__(f"{len(errors)} rows rejected")
        self.errors = errors


class WriteRowsToBigQueryFn(WriteInBatchesFn):
    """Buffers rows; sends them by streaming insert; dead-letters the rows BigQuery rejects."""

    def __init__(
        self, location: BigQueryLocation, schema: Schema, table: str,
        endpoint: Optional[str], batch_size: int, retry: RetryPolicy, counter: str, keep: Sequence[str] = (),
    ) -> None:
        super().__init__(batch_size)
        self._location = location
        self._schema = schema
        self._table_id = location.table_id(table)
        self._endpoint = endpoint
        self._retry = retry
        self._keep = tuple(keep)
        self._count = SinkCounters(counter)

    def setup(self) -> None:
        self._client = bigquery_client(self._location.project, self._endpoint)
        self._ready = False  # table and view are created on first write: the server may be down now

    def teardown(self) -> None:
        self._client.close()

    def write_batch(self, rows: list[dict]) -> Iterator[Any]:
        try:
            self._send_with_retry(rows)
            self._count.written.inc(len(rows))
            return
        except _Rejected as rejected:
            failed = {i: rows[i] for i in rejected.errors}
            self._count.written.inc(len(rows) - len(failed))
            errors = rejected.errors
        except Exception:  # noqa: BLE001 - the whole request failed: find the rows at fault
            failed, errors = {}, {}
            for i, row in enumerate(rows):
                try:
                    self._send_with_retry([row])
                    self._count.written.inc()
                except _Rejected as rejected:
                    failed[i], errors[i] = row, next(iter(rejected.errors.values()))
                except Exception as err:  # noqa: BLE001
                    failed[i], errors[i] = row, brief_error(err)
        for i, row in failed.items():
            self._count.rejected.inc()
            rejection = _sink_rejection(self._schema, self._table_id, row, errors[i])
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, rejection)

    def _send_with_retry(self, rows: list[dict]) -> None:
        # Transport and server errors are retried; rows BigQuery rejected would be rejected again.
        self._retry.call(f"writing to {self._table_id}", lambda: self._send(rows), give_up_on=_Rejected,
                         on_retry=self._count.retries.inc)

    def _send(self, rows: list[dict]) -> None:
        if not self._ready:
            ensure_table_and_view(self._client, self._schema, self._table_id, self._keep)
            self._ready = True
        payload = [to_bigquery_row(self._schema, r) for r in rows]
        errors = self._client.insert_rows_json(
            self._table_id, payload, row_ids=[insert_id(self._schema, r) for r in rows], retry=None, timeout=60)
        if errors:
            raise _Rejected({e["index"]: json.dumps(e.get("errors"), sort_keys=True)[:300] for e in errors})


class ToLoadLinesFn(beam.DoFn):
    """Row → (table_id, JSON line) to stage for a load job; a row that does not fit the schema is a
    dead letter naming the field (one bad row would fail the whole table's load)."""

    def __init__(self, schema: Schema, table_id: str) -> None:
        self._schema = schema
        self._table_id = table_id
        self._count = SinkCounters()

    def process(self, row: dict) -> Iterator[Any]:
        try:
            self._schema.parse(row)
        except ValidationError as err:
            self._count.rejected.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, _sink_rejection(self._schema, self._table_id, row, err))
        else:
            line = json.dumps(to_bigquery_row(self._schema, row), sort_keys=True).encode("utf-8") + b"\n"
            yield self._table_id, line


def _sink_rejection(schema: Schema, table_id: str, row: dict, error: Any) -> Rejection:
    """A row BigQuery refused, quoted as BigQuery would have stored it."""
    return Rejection("sink", f"{table_id}: {error}", payload_text(to_bigquery_row(schema, row)))


def _prepare_table(schema: Schema, keep: Sequence[str], client: Any, table_id: str) -> None:
    ensure_table_and_view(client, schema, table_id, keep)


METHODS = ("AUTO", "FILE_LOADS", "STREAMING_INSERTS", "STORAGE_WRITE_API")


@dataclasses.dataclass(frozen=True)
class BigQueryWriteConfig:
    """How rows reach BigQuery. The runtime builds it once from the options and the runner
    (kappaflow/wiring.py); the sinks never read pipeline options."""

    method: str = "AUTO"  # AUTO: load jobs in batch, streaming inserts when streaming
    streaming: bool = False
    temp_location: Optional[str] = None  # where load jobs and CDC merges stage their files
    endpoint: Optional[str] = None  # an emulator's host:port; None: the BigQuery service
    firing_seconds: int = 60  # streaming loads and merges: one per table every N seconds...
    files_per_firing: Optional[int] = None  # ...or every N staged files, when set
    # Storage Write API: a running Java worker pool (else one is started), and (worker pool, Java
    # options) -> address of Beam's Java expansion service, which the runtime supplies
    # (kappaflow/java_services.py): the sink never starts processes itself.
    java_worker_pool: Optional[str] = None
    expansion_service: Optional[Callable[[Optional[str], Mapping[str, str]], str]] = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"--bigquery_method={self.method}: expected one of {', '.join(METHODS)}")

    @property
    def streaming_inserts(self) -> bool:
        return self.method == "STREAMING_INSERTS" or (self.method == "AUTO" and self.streaming)


class WriteToBigQueryTable(beam.PTransform):
    """Rows → appended to PROJECT.DATASET.table (with its `_latest` view); returns dead letters."""

    def __init__(
        self, url: str, schema: Schema, table: Optional[str] = None,
        counter: str = metrics.ROWS_WRITTEN, batch_size: int = 500, retry: RetryPolicy = RetryPolicy(),
        keep_on_update: Sequence[str] = (), config: Optional[BigQueryWriteConfig] = None,
    ) -> None:
        super().__init__()
        if not schema.key:
            raise ValueError(f"schema {schema.name} has no key: the BigQuery sink needs one for its view")
        self._location = BigQueryLocation.parse(url, with_table=False)
        self._schema = schema
        self._table = table or schema.name
        self._counter = counter
        self._batch_size = batch_size  # rows per streaming insert request
        self._keep = tuple(keep_on_update)  # the `_latest` view takes these from the first pane
        self._retry = retry
        self._config = config or BigQueryWriteConfig()

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        config = self._config
        if config.method == "STORAGE_WRITE_API":
            return rows | "StorageWriteApi" >> _StorageWriteApi(
                self._location, self._schema, self._table, config, self._counter, self._keep)
        if config.streaming_inserts:
            fn = WriteRowsToBigQueryFn(self._location, self._schema, self._table, config.endpoint,
                                       self._batch_size, self._retry, self._counter,
                                       self._keep)
            outputs = rows | "WriteRows" >> beam.ParDo(fn).with_outputs(DEAD_LETTER_TAG, main="written")
            return outputs[DEAD_LETTER_TAG]
        if not config.temp_location:
            raise ValueError("--temp_location is required: BigQuery load jobs stage files there")
        table_id = self._location.table_id(self._table)
        lines = rows | "ToLoadLines" >> beam.ParDo(
            ToLoadLinesFn(self._schema, table_id)).with_outputs(DEAD_LETTER_TAG, main="lines")
        (
            lines.lines
            | "Stage" >> StageForLoads(config.temp_location, config.streaming, config.firing_seconds,
                                       config.files_per_firing)
            | "LoadPerTable" >> beam.ParDo(LoadStagedFilesFn(
                self._location.project, config.endpoint, self._retry, self._counter,
                functools.partial(_prepare_table, self._schema, self._keep)))
        )
        return lines[DEAD_LETTER_TAG]


def storage_write_schema(schema: Schema) -> dict:
    """The schema the Storage Write API rows are converted with: the table's, JSON columns sent as
    their text (Beam rows have no JSON type; BigQuery parses the text into the JSON column)."""
    def plain(field: dict) -> dict:
        return {**field, "type": "STRING" if field["type"] == "JSON" else field["type"],
                **({"fields": [plain(f) for f in field["fields"]]} if "fields" in field else {})}

    return {"fields": [plain(f) for f in schema.bigquery_schema()]}


def _write_api_value(value: Any) -> Any:
    from apache_beam.utils.timestamp import Timestamp

    if isinstance(value, dict):
        return {k: _write_api_value(v) for k, v in value.items()}
    return Timestamp.from_utc_datetime(value) if hasattr(value, "tzinfo") else value


class PrepareStorageWriteFn(beam.DoFn):
    """Row → the Storage Write API's form (timestamps as Beam timestamps, JSON as text). Before the
    first row leaves, the table (partitioned and clustered from the schema) and its `_latest` view
    exist: every row reaches the Java sink through here. Counts the rows handed to the sink."""

    def __init__(self, location: BigQueryLocation, schema: Schema, table: str, endpoint: Optional[str],
                 counter: str, keep: Sequence[str]) -> None:
        self._location, self._schema, self._table_id = location, schema, location.table_id(table)
        self._endpoint, self._keep = endpoint, tuple(keep)
        self._written = Metrics.counter(metrics.NAMESPACE, counter)

    def setup(self) -> None:
        self._client = bigquery_client(self._location.project, self._endpoint)
        self._ready = False

    def teardown(self) -> None:
        self._client.close()

    def process(self, row: dict) -> Iterator[dict]:
        if not self._ready:
            ensure_table_and_view(self._client, self._schema, self._table_id, self._keep)
            self._ready = True
        self._written.inc()
        yield _write_api_value(self._schema.to_storage_row(row))


class FailedWriteToDeadLetterFn(beam.DoFn):
    """A row the Storage Write API refused → a dead letter with BigQuery's error; it no longer
    counts as written."""

    def __init__(self, table_id: str, counter: str) -> None:
        self._table_id = table_id
        self._count = SinkCounters(counter)

    def process(self, failed: dict) -> Iterator[Rejection]:
        self._count.written.dec()
        self._count.rejected.inc()
        yield Rejection("sink", f"{self._table_id}: {str(failed['error_message'])[:300]}",
                        json.dumps(failed["failed_row"], sort_keys=True, default=str))


class _StorageWriteApi(beam.PTransform):
    """Beam's Storage Write API sink (a Java transform through kappaflow's expansion service):
    exactly-once (batch: pending streams committed at the end; streaming: buffered streams flushed
    every `--bigquery_firing_seconds`). Its failed rows → dead letters."""

    def __init__(self, location: BigQueryLocation, schema: Schema, table: str,
                 config: "BigQueryWriteConfig", counter: str, keep: Sequence[str]) -> None:
        super().__init__()
        self._location, self._schema, self._table = location, schema, table
        self._config, self._counter, self._keep = config, counter, keep

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        table_id, config = self._location.table_id(self._table), self._config
        if config.expansion_service is None:
            raise ValueError("--bigquery_method=STORAGE_WRITE_API needs Beam's Java expansion service")
        result = (
            rows
            | "PrepareRows" >> beam.ParDo(PrepareStorageWriteFn(
                self._location, self._schema, self._table, config.endpoint, self._counter, self._keep))
            | "Write" >> beam.io.WriteToBigQuery(
                f"{self._location.project}:{self._location.dataset}.{self._table}",
                schema=storage_write_schema(self._schema), method="STORAGE_WRITE_API",
                create_disposition="CREATE_NEVER", write_disposition="WRITE_APPEND",
                triggering_frequency=config.firing_seconds,
                expansion_service=config.expansion_service(config.java_worker_pool, java_options(config.endpoint)))
        )
        return result.failed_rows_with_errors | "ToDeadLetters" >> beam.ParDo(
            FailedWriteToDeadLetterFn(table_id, self._counter))


def java_options(endpoint: Optional[str]) -> dict[str, str]:
    """Java pipeline options for Beam's Java BigQuery client (the Storage Write API's workers) when
    it talks to a local BigQuery: Java has one `bigQueryEndpoint`, the REST root URL and, scheme
    cut off, the gRPC address (dialled with TLS); and no Google credentials are looked for (the
    search would probe the GCE metadata server)."""
    if not endpoint:
        return {}
    return {"bigQueryEndpoint": endpoint if "://" in endpoint else f"http://{endpoint}",
            "credentialFactoryClass": "org.apache.beam.sdk.extensions.gcp.auth.NoopCredentialFactory"}


def _read_table(location: BigQueryLocation, endpoint: Optional[str]) -> Iterator[RawRecord]:
    client = bigquery_client(location.project, endpoint)
    try:
        for number, row in enumerate(client.list_rows(location.table_id(), page_size=10_000), start=1):
            yield RawRecord(dict(row.items()), f"bigquery:{location.table_id()}#{number}", watermark=BOUNDED_WATERMARK)
    finally:
        client.close()


class ReadBigQueryRows(beam.PTransform):
    """A BigQuery table → bounded PCollection of RawRecords (rows as dicts), for backfills.

    Pages through the table with the tabledata API: one reader, no export bucket needed.
    """

    def __init__(self, url: str, endpoint: Optional[str]) -> None:
        super().__init__()
        self._location = BigQueryLocation.parse(url, with_table=True)
        self._endpoint = endpoint

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        endpoint = self._endpoint
        return (
            pbegin
            | "Table" >> beam.Create([self._location])
            | "ReadRows" >> beam.FlatMap(lambda location: _read_table(location, endpoint))
            | "Spread" >> beam.Reshuffle()
        )


def check_bigquery(url: str, endpoint: Optional[str]) -> None:
    """The dataset (of an output) or table (of an input) must answer; ConnectionError otherwise."""
    from google.api_core import exceptions

    location = BigQueryLocation.parse(url, with_table=url.count(".") == 2)
    where = endpoint or os.environ.get("BIGQUERY_EMULATOR_HOST") or "the BigQuery service"
    client = bigquery_client(location.project, endpoint)
    try:
        if location.table:
            client.get_table(location.table_id(), retry=None, timeout=10)
        else:
            client.get_dataset(f"{location.project}.{location.dataset}", retry=None, timeout=10)
    except exceptions.NotFound:
        raise ConnectionError(f"BigQuery {url[len(PREFIX):]} does not exist (at {where})") from None
    except Exception as err:  # noqa: BLE001 - transport errors come in several types
        raise ConnectionError(f"BigQuery at {where} is not reachable ({url}): {brief_error(err)}") from None
    finally:
        client.close()
