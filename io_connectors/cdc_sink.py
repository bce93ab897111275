"""Apply row changes to their target tables so that every row ends in the state of its newest change,
whatever the arrival order, the bundling, the retries or the reruns.

Each row keeps the version of the change that produced it (io_connectors/change_tables.py), and a
write replaces a row only with a greater version (sql_sink.versioned_upsert_statement): the
database orders the writes. c/u/r write the `after` image, d writes a tombstone.

Every change has exactly one outcome, counted:
- applied: its version became the row's version;
- superseded: the row, or another change of the same row in the batch, had a greater version;
- duplicate: the row already had this very version (a re-delivery the dedup did not see, a rerun);
- rejected: a type conflict, or the database refused the row on its own → dead letter.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import defaultdict
from typing import Any, Iterator

import apache_beam as beam
import sqlalchemy as sa
from apache_beam.metrics import Metrics

from io_connectors.change_tables import VERSION, ChangeTables
from io_connectors.sql_sink import versioned_upsert_statement
from kappaflow.core import metrics
from kappaflow.core.records import DEAD_LETTER_TAG, Rejection
from kappaflow.core.retry import RetryPolicy, brief_error
from kappaflow.core.schema import FieldType
from kappaflow.core.sql import create_engine
from transforms.debezium import PrimaryKeys

__all__ = ["Outcome", "apply_changes", "newest_changes", "newest_per_key", "ReportOutcomes", "ApplyChangesFn", "ApplyChanges"]


@dataclasses.dataclass
class Outcome:
    """What became of each change of one batch."""

    applied: list[dict] = dataclasses.field(default_factory=list)
    superseded: list[dict] = dataclasses.field(default_factory=list)
    duplicates: list[dict] = dataclasses.field(default_factory=list)
    rejected: list[tuple[dict, str]] = dataclasses.field(default_factory=list)


def apply_changes(engine: sa.engine.Engine, tables: ChangeTables, table: str, changes: list[dict]) -> Outcome:
    """Apply changes of one table in one transaction; returns each change's outcome."""
    columns, newest, outcome = newest_changes(tables, table, changes)
    if not newest:
        return outcome
    sa_table, key_columns = tables.sa_table(table, columns), tables.key_of(table)
    with engine.begin() as conn:
        statement = versioned_upsert_statement(engine, sa_table, key_columns, VERSION)
        written = {tuple(r) for r in conn.execute(statement, [row for _, row in newest.values()])}
        unwritten = [key for key in newest if key not in written]
        stored = _stored_versions(conn, sa_table, key_columns, unwritten)
    for key, (change, row) in newest.items():
        if key in written:
            outcome.applied.append(change)
        elif stored.get(key) == row[VERSION]:
            outcome.duplicates.append(change)
        else:
            outcome.superseded.append(change)
    return outcome


def newest_changes(tables: ChangeTables, table: str, changes: list[dict]
                   ) -> tuple[dict[str, FieldType], dict[tuple, tuple[dict, dict]], Outcome]:
    """Changes of one table → (its data columns, the newest (change, row) per key, the outcome of
    the others: rejected, superseded or duplicates within the batch)."""
    columns, rows, rejected = tables.prepare_rows(table, changes)
    outcome = Outcome(rejected=rejected)
    return columns, newest_per_key(rows, tables.key_of(table), outcome), outcome


def newest_per_key(rows: list[tuple[dict, dict]], key_columns: tuple[str, ...],
                   outcome: Outcome) -> dict[tuple, tuple[dict, dict]]:
    """key → (change, row) of the greatest version in a batch; the others are counted in `outcome`
    as superseded or duplicates. One write per row: one statement may not hit a row twice."""
    newest: dict[tuple, tuple[dict, dict]] = {}
    for change, row in rows:
        key = tuple(row[k] for k in key_columns)
        held = newest.get(key)
        if held is None or row[VERSION] > held[1][VERSION]:
            newest[key] = (change, row)
            if held is not None:
                outcome.superseded.append(held[0])
        elif row[VERSION] == held[1][VERSION]:
            outcome.duplicates.append(change)
        else:
            outcome.superseded.append(change)
    return newest


def _stored_versions(conn: sa.engine.Connection, table: sa.Table, key_columns: tuple[str, ...],
                     keys: list[tuple]) -> dict[tuple, str]:
    if not keys:
        return {}
    columns = [table.c[k] for k in key_columns]
    query = sa.select(*columns, table.c[VERSION]).where(sa.tuple_(*columns).in_(keys))
    return {tuple(r[:-1]): r[-1] for r in conn.execute(query)}


class ReportOutcomes:
    """What every change target reports of an Outcome: its counters, and a dead letter (stage
    `apply`) per rejected change."""

    def __init__(self) -> None:
        self._counters = {name: Metrics.counter(metrics.NAMESPACE, name) for name in (
            metrics.APPLIED, metrics.SUPERSEDED, metrics.DUPLICATES, metrics.REJECTED, metrics.ROWS_WRITTEN)}

    def __call__(self, outcome: Outcome) -> Iterator[beam.pvalue.TaggedOutput]:
        for name, changes in ((metrics.APPLIED, outcome.applied), (metrics.ROWS_WRITTEN, outcome.applied),
                              (metrics.SUPERSEDED, outcome.superseded), (metrics.DUPLICATES, outcome.duplicates),
                              (metrics.REJECTED, outcome.rejected)):
            self._counters[name].inc(len(changes))
        for change, reason in outcome.rejected:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, Rejection(
                "apply", reason, change_payload(change), change["origin"], event_time=change["event_time"]))


class ApplyChangesFn(beam.DoFn):
    """Buffers changes per table and applies them in batches; a batch the database keeps failing
    is retried with backoff, then applied change by change so only refused changes dead-letter."""

    def __init__(
        self, url: str, keys: PrimaryKeys, batch_size: int, retry: RetryPolicy
    ) -> None:
        self._url = url
        self._keys = keys
        self._batch_size = batch_size
        self._retry = retry
        self._report = ReportOutcomes()

    def setup(self) -> None:
        self._engine = create_engine(self._url)
        self._tables = ChangeTables(self._engine, self._keys)

    def teardown(self) -> None:
        self._engine.dispose()

    def start_bundle(self) -> None:
        self._buffer: dict[str, list[dict]] = defaultdict(list)
        self._buffered = 0

    def process(self, change: dict) -> Iterator[Any]:
        self._buffer[change["table"]].append(change)
        self._buffered += 1
        if self._buffered >= self._batch_size:
            yield from self._flush()

    def finish_bundle(self) -> Iterator[Any]:
        from apache_beam.transforms.window import GlobalWindow
        from apache_beam.utils.windowed_value import WindowedValue

        for letter in self._flush():
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER_TAG, WindowedValue(letter.value, time.time(), [GlobalWindow()]))

    def _flush(self) -> Iterator[Any]:
        buffer, self._buffer, self._buffered = self._buffer, defaultdict(list), 0
        for table, changes in buffer.items():
            outcome = self._apply_with_retry(table, changes)
            if outcome is None:
                outcome = self._apply_one_by_one(table, changes)
            yield from self._report(outcome)

    def _apply_with_retry(self, table: str, changes: list[dict]) -> Outcome | None:
        try:
            return self._retry.call(f"applying {len(changes)} changes to {table}",
                                    lambda: apply_changes(self._engine, self._tables, table, changes),
                                    retry_on=sa.exc.SQLAlchemyError)
        except sa.exc.SQLAlchemyError:
            return None

    def _apply_one_by_one(self, table: str, changes: list[dict]) -> Outcome:
        """Isolate the changes the database refuses: only those become dead letters."""
        outcome = Outcome()
        for change in changes:
            try:
                single = apply_changes(self._engine, self._tables, table, [change])
            except sa.exc.SQLAlchemyError as err:
                single = Outcome(rejected=[(change, f"{table}: {brief_error(err)}")])
            for field in dataclasses.fields(Outcome):
                getattr(outcome, field.name).extend(getattr(single, field.name))
        return outcome


def change_payload(change: dict) -> str:
    fields = ("table", "op", "key", "version", "image")
    return json.dumps({k: change[k] for k in fields}, sort_keys=True, default=str)


class ApplyChanges(beam.PTransform):
    """Changes → applied to their tables at `url` (SQLite or PostgreSQL); returns dead letters."""

    def __init__(self, url: str, keys: PrimaryKeys, batch_size: int = 500,
                 retry: RetryPolicy = RetryPolicy()) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self._fn = ApplyChangesFn(url, keys, batch_size, retry)

    def expand(self, changes: beam.PCollection) -> beam.PCollection:
        outputs = changes | "Apply" >> beam.ParDo(self._fn).with_outputs(DEAD_LETTER_TAG, main="applied")
        return outputs[DEAD_LETTER_TAG]
