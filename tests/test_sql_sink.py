"""UpsertToDatabase into a real SQLite file: later panes win, reruns are idempotent, bad rows dead-letter."""

from __future__ import annotations

import json

import apache_beam as beam
import pytest
import sqlalchemy as sa
from apache_beam.testing.util import BeamAssertException, assert_that, equal_to

from io_connectors.sql_sink import UpsertToDatabase, ensure_table, upsert_rows
from kappaflow.core.records import dead_letter_row
from kappaflow.core.retry import RetryPolicy
from kappaflow.core.schema import Field, FieldType, Schema

T0 = 1704067200.0

METRICS = Schema(
    name="page_metrics",
    key=("window_start", "page"),
    fields=(
        Field("window_start", FieldType.TIMESTAMP, required=True),
        Field("page", FieldType.STRING, required=True),
        Field("events", FieldType.INT64, required=True),
        Field("pane_timing", FieldType.STRING),
        Field("pane_index", FieldType.INT64, required=True),
    ),
)
NO_RETRY = RetryPolicy(attempts=1)


def row(page, events, pane_index, start=T0, timing="ON_TIME", **extra):
    return {"window_start": start, "page": page, "events": events, "pane_timing": timing,
            "pane_index": pane_index, **extra}


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path / 'out.db'}"
    engine = sa.create_engine(url)
    yield url, engine
    engine.dispose()


def table_rows(engine) -> list[tuple]:
    with engine.connect() as conn:
        return sorted(tuple(r) for r in conn.exec_driver_sql(
            "SELECT window_start, page, events, pane_timing, pane_index FROM page_metrics"))


def write(run_batch, url, rows, batch_size=500):
    def build(p):
        dead = p | beam.Create(rows, reshuffle=False) | UpsertToDatabase(
            url, METRICS, batch_size=batch_size, retry=NO_RETRY)
        assert_that(dead, equal_to([]))

    return run_batch(build)


def test_later_pane_wins_within_a_batch_and_across_runs(db, run_batch, count_of):
    url, engine = db
    # In one batch the pane order of arrival does not matter: the higher pane index wins.
    result = write(run_batch, url, [row("home", 5, 1, timing="LATE"), row("home", 3, 0),
                                    row("cart", 1, 0), row("home", 9, 0, start=T0 + 60)])
    assert count_of(result, "rows_written") == 3
    assert table_rows(engine) == [
        ("2024-01-01T00:00:00.000000Z", "cart", 1, "ON_TIME", 0),
        ("2024-01-01T00:00:00.000000Z", "home", 5, "LATE", 1),
        ("2024-01-01T00:01:00.000000Z", "home", 9, "ON_TIME", 0),
    ]
    # A later pane in a later run updates the row in place.
    write(run_batch, url, [row("cart", 4, 1, timing="LATE")], batch_size=1)
    assert table_rows(engine) == [
        ("2024-01-01T00:00:00.000000Z", "cart", 4, "LATE", 1),
        ("2024-01-01T00:00:00.000000Z", "home", 5, "LATE", 1),
        ("2024-01-01T00:01:00.000000Z", "home", 9, "ON_TIME", 0),
    ]


def test_rerun_is_idempotent(db, run_batch):
    url, engine = db
    rows = [row(f"p{i}", i, 0, start=T0 + 60 * (i % 3)) for i in range(12)]
    write(run_batch, url, rows, batch_size=5)
    first = table_rows(engine)
    assert len(first) == 12
    write(run_batch, url, rows, batch_size=5)
    assert table_rows(engine) == first


def sink_dead_letters(expected_pages):
    def check(actual):
        got = sorted(json.loads(d["payload"])["page"] for d in actual)
        if got != sorted(expected_pages):
            raise BeamAssertException(f"dead letters for {got}, expected {expected_pages}")
        for d in actual:
            if d["stage"] != "sink" or not d["reason"].startswith("page_metrics: ") \
                    or "NOT NULL" not in d["reason"] or d["pipeline"] != "test":
                raise BeamAssertException(f"bad dead letter {d}")
    return check


@pytest.mark.parametrize("batch_size", [500, 2])  # flushed in finish_bundle / in process
def test_rejected_row_is_dead_lettered_and_the_rest_written(db, run_batch, count_of, batch_size):
    url, engine = db
    rows = [row("home", 1, 0), row("bad", None, 0), row("cart", 2, 0), row("shop", 3, 0)]

    def build(p):
        dead = p | beam.Create(rows, reshuffle=False) | UpsertToDatabase(
            url, METRICS, batch_size=batch_size, retry=NO_RETRY)
        assert_that(dead | beam.Map(dead_letter_row, "test"), sink_dead_letters(["bad"]))

    result = run_batch(build)
    assert table_rows(engine) == [
        ("2024-01-01T00:00:00.000000Z", "cart", 2, "ON_TIME", 0),
        ("2024-01-01T00:00:00.000000Z", "home", 1, "ON_TIME", 0),
        ("2024-01-01T00:00:00.000000Z", "shop", 3, "ON_TIME", 0),
    ]
    assert count_of(result, "rows_written") == 3
    assert count_of(result, "rows_rejected_by_sink") == 1


def test_extra_fields_are_ignored_and_custom_table_and_counter(db, run_batch, count_of):
    url, engine = db

    def build(p):
        p | beam.Create([row("home", 1, 0, updated_by="x")]) | UpsertToDatabase(
            url, METRICS, table="other_table", retry=NO_RETRY, counter="custom_written")

    result = run_batch(build)
    assert count_of(result, "custom_written") == 1
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT page, events FROM other_table").all() == [("home", 1)]


def test_ensure_table_is_idempotent_and_needs_a_key(db):
    _, engine = db
    ensure_table(engine, METRICS)
    table = ensure_table(engine, METRICS)
    assert [c.name for c in table.primary_key.columns] == ["window_start", "page"]
    with pytest.raises(ValueError):
        UpsertToDatabase("sqlite://", Schema("nokey", (Field("a", FieldType.STRING),)))


ALERTS = Schema(
    name="alerts",
    key=("alert_id",),
    fields=(
        Field("alert_id", FieldType.STRING, required=True),
        Field("max", FieldType.FLOAT64, required=True),
        Field("created_at", FieldType.TIMESTAMP, required=True),
    ),
)


@pytest.mark.parametrize("batch_size", [500, 1])
def test_keep_on_update_columns_keep_their_first_value(db, run_batch, batch_size):
    url, engine = db

    def write_alerts(rows):
        def build(p):
            p | beam.Create(rows, reshuffle=False) | UpsertToDatabase(
                url, ALERTS, batch_size=batch_size, retry=NO_RETRY, keep_on_update=("created_at",))
        run_batch(build)

    write_alerts([{"alert_id": "a", "max": 91.0, "created_at": T0}, {"alert_id": "a", "max": 95.0, "created_at": T0 + 5}])
    write_alerts([{"alert_id": "a", "max": 99.0, "created_at": T0 + 60}, {"alert_id": "b", "max": 92.0, "created_at": T0 + 60}])
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT alert_id, max, created_at FROM alerts ORDER BY alert_id").all() == [
            ("a", 99.0, "2024-01-01T00:00:00.000000Z"), ("b", 92.0, "2024-01-01T00:01:00.000000Z")]


def test_keep_on_update_with_delete_then_insert(db):
    from io_connectors import sql_sink

    url, engine = db
    table = ensure_table(engine, ALERTS)
    original = sql_sink._upsert_statement
    sql_sink._upsert_statement = lambda *args: None  # the path of dialects without a native upsert
    try:
        upsert_rows(engine, table, ALERTS.key, [{"alert_id": "a", "max": 91.0, "created_at": T0}], ("created_at",))
        upsert_rows(engine, table, ALERTS.key, [{"alert_id": "a", "max": 97.0, "created_at": T0 + 9}], ("created_at",))
    finally:
        sql_sink._upsert_statement = original
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT alert_id, max, created_at FROM alerts").all() == [
            ("a", 97.0, "2024-01-01T00:00:00.000000Z")]


def test_keep_on_update_must_name_a_non_key_field():
    with pytest.raises(ValueError):
        UpsertToDatabase("sqlite://", ALERTS, keep_on_update=("alert_id",))
    with pytest.raises(ValueError):
        UpsertToDatabase("sqlite://", ALERTS, keep_on_update=("nope",))
