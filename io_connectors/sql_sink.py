"""Idempotent SQL sink: rows are upserted on the schema's key through SQLAlchemy.

The dialect's native upsert is used where it has one (SQLite and PostgreSQL `ON CONFLICT DO
UPDATE`, MySQL `ON DUPLICATE KEY UPDATE`); other databases get delete-then-insert in one
transaction. Rows are written in batches, one transaction per batch. A failed batch is retried
with backoff, then written row by row so that only the rows the database rejects become dead
letters.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence

import apache_beam as beam
import sqlalchemy as sa

from io_connectors.batched_write import SinkCounters, WriteInBatchesFn
from kappaflow.core import metrics
from kappaflow.core.records import DEAD_LETTER_TAG, Rejection, payload_text
from kappaflow.core.retry import RetryPolicy, brief_error
from kappaflow.core.schema import Schema
from kappaflow.core.sql import create_engine, safe_url

__all__ = [
    "UpsertToDatabase", "UpsertRowsFn", "ensure_table", "upsert_rows",
    "check_kept_columns", "versioned_upsert_statement", "check_database",
]


def check_database(url: str) -> None:
    """Connect once; raise ConnectionError naming the server when it does not answer."""
    if url.startswith("sqlite"):
        return  # embedded: there is no server to be down
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.SQLAlchemyError as err:
        reason = brief_error(getattr(err, "orig", None) or err)
        raise ConnectionError(f"database {safe_url(url)} is not reachable: {reason}") from None
    finally:
        engine.dispose()


def ensure_table(engine: sa.engine.Engine, schema: Schema, name: Optional[str] = None) -> sa.Table:
    table = schema.sqlalchemy_table(sa.MetaData(), name)
    try:
        table.create(engine, checkfirst=True)
    except sa.exc.SQLAlchemyError:
        # Another worker may have created it between the check and the create.
        if not sa.inspect(engine).has_table(table.name):
            raise
    _add_missing_columns(engine, table)
    return table


def _add_missing_columns(engine: sa.engine.Engine, table: sa.Table) -> None:
    """A table from an older declaration gets the optional fields added since; none is dropped."""
    present = {c["name"] for c in sa.inspect(engine).get_columns(table.name)}
    preparer = engine.dialect.identifier_preparer
    for column in table.columns:
        if column.name in present or not column.nullable:
            continue
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(f"ALTER TABLE {preparer.quote(table.name)} ADD COLUMN "
                                     f"{preparer.quote(column.name)} {column.type.compile(dialect=engine.dialect)}")
        except sa.exc.SQLAlchemyError:
            if column.name not in {c["name"] for c in sa.inspect(engine).get_columns(table.name)}:
                raise  # not a concurrent worker adding it first


def _upsert_statement(
    engine: sa.engine.Engine, table: sa.Table, key: Sequence[str], keep: Sequence[str] = ()
) -> Any:
    dialect = engine.dialect.name
    non_key = [c.name for c in table.columns if c.name not in key and c.name not in keep]
    if dialect in ("sqlite", "postgresql"):
        module = sa.dialects.sqlite if dialect == "sqlite" else sa.dialects.postgresql
        stmt = module.insert(table)
        return stmt.on_conflict_do_update(
            index_elements=list(key), set_={c: stmt.excluded[c] for c in non_key}
        )
    if dialect in ("mysql", "mariadb"):
        stmt = sa.dialects.mysql.insert(table)
        return stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in non_key})
    return None


def versioned_upsert_statement(engine: sa.engine.Engine, table: sa.Table, key: Sequence[str],
                               version: str) -> Any:
    """Upsert that replaces a row only with a greater `version` (`ON CONFLICT DO UPDATE ... WHERE
    excluded.version > table.version`), returning the keys it inserted or updated.

    The database itself orders the writes, so concurrent bundles, retries and reruns converge.
    SQLite and PostgreSQL only: other dialects have no conditional upsert to build this on.
    """
    dialect = engine.dialect.name
    if dialect not in ("sqlite", "postgresql"):
        raise ValueError(f"versioned upserts need SQLite or PostgreSQL, not {dialect}")
    module = sa.dialects.sqlite if dialect == "sqlite" else sa.dialects.postgresql
    stmt = module.insert(table)
    non_key = [c.name for c in table.columns if c.name not in key]
    return stmt.on_conflict_do_update(
        index_elements=list(key),
        set_={c: stmt.excluded[c] for c in non_key},
        where=stmt.excluded[version] > table.c[version],
    ).returning(*(table.c[k] for k in key))


def upsert_rows(
    engine: sa.engine.Engine, table: sa.Table, key: Sequence[str], rows: list[dict],
    keep_on_update: Sequence[str] = (),
) -> None:
    """Upsert `rows` in one transaction (rows must have distinct keys). Columns in
    `keep_on_update` are written when a row is inserted and never changed afterwards."""
    stmt = _upsert_statement(engine, table, key, keep_on_update)
    with engine.begin() as conn:
        if stmt is not None:
            conn.execute(stmt, rows)
            return
        condition = sa.and_(*(table.c[k] == sa.bindparam(f"_key_{k}") for k in key))
        if keep_on_update:
            rows = _with_kept_values(conn, table, key, keep_on_update, rows)
        conn.execute(
            table.delete().where(condition), [{f"_key_{k}": r[k] for k in key} for r in rows]
        )
        conn.execute(table.insert(), rows)


def _with_kept_values(conn: Any, table: sa.Table, key: Sequence[str], keep: Sequence[str],
                      rows: list[dict]) -> list[dict]:
    """Delete-then-insert dialects: carry the stored values of the kept columns over."""
    out = []
    for row in rows:
        stored = conn.execute(
            sa.select(*(table.c[c] for c in keep)).where(*(table.c[k] == row[k] for k in key))
        ).first()
        out.append(row if stored is None else {**row, **dict(stored._mapping)})
    return out


class UpsertRowsFn(WriteInBatchesFn):
    def __init__(
        self, url: str, schema: Schema, table: Optional[str],
        batch_size: int, retry: RetryPolicy, counter: str, keep_on_update: Sequence[str] = (),
    ) -> None:
        super().__init__(batch_size)
        self._url = url
        self._keep = tuple(keep_on_update)
        self._schema = schema
        self._table_name = table
        self._retry = retry
        self._count = SinkCounters(counter)

    def setup(self) -> None:
        self._engine = create_engine(self._url)
        self._table = self._schema.sqlalchemy_table(sa.MetaData(), self._table_name)
        self._table_ready = False  # created on first write: the server may be down at setup
        self._columns = self._schema.field_names

    def teardown(self) -> None:
        self._engine.dispose()

    def _one_row_per_key(self, batch: list[dict]) -> list[dict]:
        # One statement may not update a row twice: within a batch the later pane wins, and the
        # first value of an insert-only column stays.
        by_key: dict[tuple, dict] = {}
        for row in batch:
            key = tuple(row[k] for k in self._schema.key)
            previous = by_key.get(key)
            if previous is None or row.get("pane_index", 0) >= previous.get("pane_index", 0):
                by_key[key] = {c: row.get(c) for c in self._columns}
                if previous is not None:
                    by_key[key].update({c: previous[c] for c in self._keep})
        return list(by_key.values())

    def write_batch(self, batch: list[dict]) -> Iterator[Any]:
        rows = self._one_row_per_key(batch)
        if self._write_with_retry(rows):
            self._count.written.inc(len(rows))
            return
        for row in rows:  # isolate the rows the database rejects
            try:
                self._upsert([row])
                self._count.written.inc()
            except sa.exc.SQLAlchemyError as err:
                self._count.rejected.inc()
                yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, Rejection(
                    "sink", f"{self._table.name}: {brief_error(err)}", payload_text(row)))

    def _upsert(self, rows: list[dict]) -> None:
        if not self._table_ready:
            ensure_table(self._engine, self._schema, self._table_name)
            self._table_ready = True
        upsert_rows(self._engine, self._table, self._schema.key, rows, self._keep)

    def _write_with_retry(self, rows: list[dict]) -> bool:
        try:
            self._retry.call(f"upsert into {self._table.name}", lambda: self._upsert(rows),
                             retry_on=sa.exc.SQLAlchemyError, on_retry=self._count.retries.inc)
        except sa.exc.SQLAlchemyError:
            return False
        return True


class UpsertToDatabase(beam.PTransform):
    """Rows → upserted into `table` (default: the schema's name); returns sink dead letters.
    `keep_on_update`: columns set on insert only (e.g. `created_at`)."""

    def __init__(
        self, url: str, schema: Schema, table: Optional[str] = None,
        batch_size: int = 500, retry: RetryPolicy = RetryPolicy(), counter: str = metrics.ROWS_WRITTEN,
        keep_on_update: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if not schema.key:
            raise ValueError(f"schema {schema.name} has no key: an upsert sink needs one")
        check_kept_columns(schema, keep_on_update)
        self._fn = UpsertRowsFn(url, schema, table, batch_size, retry, counter, keep_on_update)

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        outputs = rows | "Upsert" >> beam.ParDo(self._fn).with_outputs(DEAD_LETTER_TAG, main="written")
        return outputs[DEAD_LETTER_TAG]


def check_kept_columns(schema: Schema, keep_on_update: Sequence[str]) -> None:
    for column in keep_on_update:
        if column not in schema.field_names or column in schema.key:
            raise ValueError(f"schema {schema.name}: keep_on_update column {column!r} must be a non-key field")
