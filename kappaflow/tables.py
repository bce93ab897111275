"""Read back output tables and compare runs: how batch = streaming replay is checked."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from typing import Any, Iterable

import sqlalchemy as sa

from kappaflow.core.sql import create_engine

from kappaflow.core.schema import Schema, parse_timestamp

__all__ = ["PANE_COLUMNS", "read_rows", "TableDiff", "diff_tables", "too_late_records", "explain_difference",
           "read_change_table", "read_change_tables"]

# How a row was produced, not what it says: they differ between batch and streaming by design.
PANE_COLUMNS = ("pane_timing", "pane_index", "updated_at")


def read_rows(url: str, schema: Schema, table: str | None = None) -> dict[tuple, dict]:
    """key → row (without the pane columns) of one output table."""
    engine = create_engine(url)  # postgresql:// means the driver we ship
    try:
        sa_table = schema.sqlalchemy_table(sa.MetaData(), table)
        with engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(sa.select(sa_table))]
    finally:
        engine.dispose()
    return {
        tuple(r[k] for k in schema.key): {c: v for c, v in r.items() if c not in PANE_COLUMNS}
        for r in rows
    }


@dataclasses.dataclass(frozen=True)
class TableDiff:
    only_left: tuple
    only_right: tuple
    differing: tuple

    @property
    def identical(self) -> bool:
        return not (self.only_left or self.only_right or self.differing)

    def summary(self) -> str:
        if self.identical:
            return "identical"
        return (f"{len(self.only_left)} keys only in the first, {len(self.only_right)} only in the "
                f"second, {len(self.differing)} with different values")


def diff_tables(left: dict[tuple, dict], right: dict[tuple, dict]) -> TableDiff:
    return TableDiff(
        only_left=tuple(sorted(set(left) - set(right), key=repr)),
        only_right=tuple(sorted(set(right) - set(left), key=repr)),
        differing=tuple(sorted((k for k in set(left) & set(right) if left[k] != right[k]), key=repr)),
    )


def too_late_records(url: str, pipeline: str) -> list[dict[str, Any]]:
    """The events (as the router saw them) that a run dead-lettered as too late."""
    engine = create_engine(url)  # postgresql:// means the driver we ship
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT payload, window_start FROM dead_letters "
                        "WHERE pipeline = :p AND stage = 'late'"),
                {"p": pipeline},
            ).all()
    finally:
        engine.dispose()
    # window_start comes back as stored (ISO text on SQLite): callers compare it as such.
    return [{**json.loads(payload), "missed_window_start": window_start} for payload, window_start in rows]


def count_by(records: Iterable[dict], fields: tuple[str, ...]) -> Counter:
    return Counter(tuple(r[f] for f in fields) for r in records)


def explain_difference(batch: dict, streaming: dict, late: list[dict]) -> bool:
    """Is the streaming table the batch table less some of the too-late records (events and
    revenue), per window and event type? Too-late records are routed before enrichment, so they
    carry no country. "Some": a too-late copy of an event whose earlier copy was aggregated leaves
    the table as it is (copies share the router's shard: once one is too late, later ones are too)."""
    if set(streaming) - set(batch):
        return False

    def by_window_and_type(rows: dict) -> dict:
        totals: dict[tuple, list] = {}
        for (start, event_type, _country), row in rows.items():
            total = totals.setdefault((start, event_type), [0, 0.0])
            total[0] += row["events"]
            total[1] += row["revenue"]
        return totals

    late_by_key: dict[tuple, list[float]] = {}
    for record in late:
        key = (parse_timestamp(record["missed_window_start"]), record["event_type"])
        late_by_key.setdefault(key, []).append(record["revenue"])
    expected, actual = by_window_and_type(batch), by_window_and_type(streaming)
    for key, (events, revenue) in expected.items():
        got_events, got_revenue = actual.get(key, (0, 0.0))
        missing, revenues = events - got_events, sorted(late_by_key.get(key, []))
        if not 0 <= missing <= len(revenues):
            return False
        lost = revenue - got_revenue
        if not sum(revenues[:missing]) - 1e-6 <= lost <= sum(revenues[len(revenues) - missing:]) + 1e-6:
            return False
    return True


def read_change_table(engine: sa.engine.Engine, table: str) -> dict[tuple, dict]:
    """key → row of one CDC target table, bookkeeping columns and tombstones included."""
    inspector = sa.inspect(engine)
    key = inspector.get_pk_constraint(table)["constrained_columns"]
    sa_table = sa.Table(table, sa.MetaData(), autoload_with=engine)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.select(sa_table))]
    return {tuple(r[k] for k in key): r for r in rows}


def read_change_tables(url: str) -> dict[str, dict[tuple, dict]]:
    """table → key → row of every CDC target table (those with a `_cdc_version` column) at `url`."""
    engine = create_engine(url)  # postgresql:// means the driver we ship
    try:
        inspector = sa.inspect(engine)
        names = [t for t in inspector.get_table_names()
                 if any(c["name"] == "_cdc_version" for c in inspector.get_columns(t))]
        return {name: read_change_table(engine, name) for name in names}
    finally:
        engine.dispose()
