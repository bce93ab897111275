"""CDC target tables, shaped by the change images: created from the first image, widened when an
image brings a new column, and guarding each column's type.

A target table has the source table's name and primary key, one column per `after` column, and
two bookkeeping columns:
- `_cdc_version`: the version of the change that produced the row (transforms/debezium.py);
  byte-ordered text (`COLLATE "C"` on PostgreSQL), so the database compares versions itself.
- `_cdc_deleted`: true for a tombstone. A delete keeps the key and the version and clears the
  other columns, so an older change that arrives later cannot bring the row back. Live rows:
  `WHERE NOT _cdc_deleted`.

Column types, decided the same way whatever the batching and arrival order:
- declared: the Kafka Connect schema of the change (its `types`, transforms/debezium.py) wins;
- otherwise from the values (bool, integer, float, text, JSON for objects and arrays), widened:
  a new column whose changes hold integers and floats is a float column, and an integer column
  that later receives a float becomes a float column (ALTER; SQLite rebuilds the table), so the
  type never depends on which 500-change batch came first. Integers and floats are the only
  widening: other mixes (text after numbers, ...) stay type conflicts;
- a column whose values have all been null has no type yet and is added with the first value.
A value that cannot be coerced to its column's type (the parser's rules: kappaflow/core/schema.py
coerce_value) is a type conflict: that change is rejected with the reason. Identifiers are quoted
by SQLAlchemy; values are always bound parameters.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import sqlalchemy as sa

from kappaflow.core.schema import FieldType, coerce_value, sql_type
from transforms.debezium import PrimaryKeys, identifier_problem

__all__ = ["VERSION", "DELETED", "ChangeTables", "infer_type", "wider_type"]

VERSION = "_cdc_version"
DELETED = "_cdc_deleted"
_RESERVED_PREFIX = "_cdc_"
# Compared byte by byte on every dialect: PostgreSQL's default collations ignore punctuation.
VERSION_TYPE = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def infer_type(value: Any) -> FieldType:
    """The column type a first non-null JSON value asks for."""
    if isinstance(value, bool):
        return FieldType.BOOL
    if isinstance(value, int):
        return FieldType.INT64
    if isinstance(value, float):
        return FieldType.FLOAT64
    if isinstance(value, str):
        return FieldType.STRING
    return FieldType.JSON


def wider_type(held: Optional[FieldType], seen: FieldType) -> FieldType:
    """The column type for values of type `held` and `seen`: integers widen to floats; any other
    mix keeps `held` (the later values are type conflicts)."""
    if held is None or {held, seen} == {FieldType.INT64, FieldType.FLOAT64}:
        return FieldType.FLOAT64 if held is not None else seen
    return held


def _reflected_type(column: str, sql: sa.types.TypeEngine) -> FieldType:
    for sa_type, field_type in ((sa.Boolean, FieldType.BOOL), (sa.Integer, FieldType.INT64),
                                (sa.Float, FieldType.FLOAT64), (sa.Numeric, FieldType.FLOAT64),
                                (sa.JSON, FieldType.JSON), (sa.String, FieldType.STRING)):
        if isinstance(sql, sa_type):
            return field_type
    raise ValueError(f"column {column} has type {sql}, which CDC does not write")


class ChangeTables:
    """The target tables of one database as this worker knows them, grown by DDL when needed."""

    def __init__(self, engine: sa.engine.Engine, keys: PrimaryKeys) -> None:
        self._engine = engine
        self._keys = keys
        self._columns: dict[str, dict[str, FieldType]] = {}  # table → data columns, in table order

    def key_of(self, table: str) -> tuple[str, ...]:
        return self._keys.tables[table]

    def prepare(
        self, table: str, changes: list[dict]
    ) -> tuple[sa.Table, list[tuple[dict, dict]], list[tuple[dict, str]]]:
        """Changes of one table → (the table, (change, row) pairs to write, (change, reason)
        rejected). Creates the table or adds columns first when the images need it."""
        columns, rows, rejected = self.prepare_rows(table, changes)
        return self.sa_table(table, columns), rows, rejected

    def prepare_rows(
        self, table: str, changes: list[dict]
    ) -> tuple[dict[str, FieldType], list[tuple[dict, dict]], list[tuple[dict, str]]]:
        """As `prepare`, with the table's data columns instead of an SQLAlchemy table: what every
        target (SQL, BigQuery) shares. Subclasses provide `_reflect` and `_grow` for their store."""
        for _ in range(2):  # once more after DDL, against the columns as they now are
            columns = self._known_columns(table)
            rows, rejected, new = self._rows(table, columns, changes)
            if not new:
                return dict(columns), rows, rejected
            self._grow(table, columns, new)
        raise RuntimeError(f"{table}: columns {sorted(new)} still missing after adding them")

    def _values(self, table: str, change: dict) -> dict[str, Any]:
        return dict(change["image"] or {}, **dict(zip(self.key_of(table), change["key"])))

    @staticmethod
    def _names_problem(values: Mapping[str, Any]) -> Optional[str]:
        """Why a change's column names are refused (the first bad one), or None."""
        for name in values:
            problem = identifier_problem(name) or (
                f"{name!r} is reserved ({_RESERVED_PREFIX}*)" if name.startswith(_RESERVED_PREFIX) else None)
            if problem:
                return f"column {problem}"
        return None

    def _types_needed(self, table: str, columns: Mapping[str, FieldType], changes: list[dict]
                      ) -> dict[str, FieldType]:
        """Columns to add, and integer columns to widen to floats, for these changes (in version
        order, so that every run decides alike)."""
        needed: dict[str, FieldType] = {}
        for change in changes:
            declared = change.get("types") or {}
            values = self._values(table, change)
            if self._names_problem(values):
                continue  # a change `_rows` rejects: it adds no column
            for name, value in values.items():
                if value is None:
                    continue
                seen = FieldType(declared[name]) if name in declared else infer_type(value)
                held = needed.get(name) or columns.get(name)
                wanted = wider_type(held, seen)
                if wanted is not held:
                    needed[name] = wanted
        return needed

    def _rows(self, table: str, columns: Mapping[str, FieldType], changes: list[dict]
              ) -> tuple[list[tuple[dict, dict]], list[tuple[dict, str]], dict[str, FieldType]]:
        changes = sorted(changes, key=lambda c: c["version"])
        needed = self._types_needed(table, columns, changes)
        if needed:
            return [], [], needed
        rows, rejected = [], []
        for change in changes:
            values = self._values(table, change)
            row, reason = {}, self._names_problem(values)
            for name, value in values.items() if reason is None else ():
                if value is None:
                    row[name] = None
                    continue
                column_type = columns[name]
                try:
                    row[name] = coerce_value(column_type, value)
                except ValueError as err:
                    reason = f"type conflict: {table}.{name} is {column_type.value}: {err}"
                    break
            if reason is not None:
                rejected.append((change, reason))
                continue
            rows.append((change, row))
        complete = []
        for change, row in rows:
            full = {name: row.get(name) for name in columns}
            full[VERSION] = change["version"]
            full[DELETED] = change["op"] == "d"
            complete.append((change, full))
        return complete, rejected, {}

    def _known_columns(self, table: str) -> dict[str, FieldType]:
        if table not in self._columns:
            self._columns[table] = self._reflect(table)
        return self._columns[table]

    def _reflect(self, table: str) -> dict[str, FieldType]:
        inspector = sa.inspect(self._engine)
        if not inspector.has_table(table):
            return {}
        found = {c["name"]: c["type"] for c in inspector.get_columns(table)}
        if VERSION not in found or DELETED not in found:
            raise ValueError(f"table {table} exists but is not a CDC target (no {VERSION}, {DELETED})")
        return {name: _reflected_type(name, t) for name, t in found.items() if name not in (VERSION, DELETED)}

    def sa_table(self, table: str, columns: Mapping[str, FieldType], name: Optional[str] = None) -> sa.Table:
        """The target table `table` (named `name` when given: a copy being built)."""
        key = self.key_of(table)
        return sa.Table(
            name or table, sa.MetaData(),
            *(sa.Column(name, sql_type(t), primary_key=name in key, autoincrement=False)
              for name, t in columns.items()),
            sa.Column(VERSION, VERSION_TYPE, nullable=False),
            sa.Column(DELETED, sa.Boolean, nullable=False),
        )

    def _grow(self, table: str, columns: Mapping[str, FieldType], new: Mapping[str, FieldType]) -> None:
        """Create the table (key columns first), add the new columns, widen integer columns to
        floats. Another worker may do the same at the same time: a failed DDL statement is fine if
        the columns are as wanted afterwards."""
        widened = {name: t for name, t in new.items() if name in columns}
        new = {name: t for name, t in new.items() if name not in columns}
        if widened:
            self._widen(table, widened)
            columns = self._columns[table]
        if not new:
            return
        error: Optional[Exception] = None
        try:
            if not columns:
                key = self.key_of(table)
                ordered = {name: new[name] for name in key} | dict(new)
                self.sa_table(table, ordered).create(self._engine, checkfirst=True)
            else:
                preparer = self._engine.dialect.identifier_preparer
                with self._engine.begin() as conn:
                    for name, column_type in new.items():
                        conn.exec_driver_sql(
                            f"ALTER TABLE {preparer.quote(table)} ADD COLUMN {preparer.quote(name)} "
                            f"{sql_type(column_type).compile(dialect=self._engine.dialect)}")
        except sa.exc.SQLAlchemyError as err:
            error = err
        self._columns[table] = self._reflect(table)
        if error is not None and not set(new) <= set(self._columns[table]):
            raise error

    def _widen(self, table: str, widened: Mapping[str, FieldType]) -> None:
        """Integer columns → float columns, their values kept. PostgreSQL alters the column type;
        SQLite cannot, so the table is rebuilt in one transaction (its REAL columns convert the
        stored integers)."""
        current = self._reflect(table)  # another worker may have widened them already
        todo = {name: t for name, t in widened.items() if current.get(name) is not t}
        if todo:
            dialect = self._engine.dialect
            preparer = dialect.identifier_preparer
            with self._engine.begin() as conn:
                if dialect.name == "sqlite":
                    rebuilt = f"_cdc_widen_{table}"
                    self.sa_table(table, {**current, **todo}, rebuilt).create(conn)
                    names = ", ".join(preparer.quote(n) for n in [*current, VERSION, DELETED])
                    conn.exec_driver_sql(f"INSERT INTO {preparer.quote(rebuilt)} ({names}) "
                                         f"SELECT {names} FROM {preparer.quote(table)}")
                    conn.exec_driver_sql(f"DROP TABLE {preparer.quote(table)}")
                    conn.exec_driver_sql(f"ALTER TABLE {preparer.quote(rebuilt)} RENAME TO {preparer.quote(table)}")
                else:
                    for name, column_type in todo.items():
                        conn.exec_driver_sql(
                            f"ALTER TABLE {preparer.quote(table)} ALTER COLUMN {preparer.quote(name)} "
                            f"TYPE {sql_type(column_type).compile(dialect=dialect)}")
        self._columns[table] = self._reflect(table)
