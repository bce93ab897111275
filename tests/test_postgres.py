"""The SQL sink, enrichment and the clickstream pipeline against a real PostgreSQL server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import apache_beam as beam
import pytest
import sqlalchemy as sa
from apache_beam.testing.util import BeamAssertException, assert_that, equal_to

from io_connectors.sql_sink import UpsertToDatabase, _upsert_statement
from kappaflow.core.records import DEAD_LETTER_TAG, dead_letter_row
from kappaflow.core.retry import RetryPolicy
from kappaflow.core.schema import Field, FieldType, Schema
from kappaflow.core.schemas.clickstream import CLICKSTREAM_METRICS
from kappaflow.core.sql import create_engine
from kappaflow.launcher import run
from kappaflow.samples.clickstream import SampleConfig, build_reference_db, write_sample
from kappaflow.tables import read_rows
from pipelines import clickstream
from transforms.enrich_database import EnrichFromDatabase, LookupSpec

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T0 = 1704067200.0
METRICS = Schema(
    name="page_metrics",
    key=("window_start", "page"),
    fields=(
        Field("window_start", FieldType.TIMESTAMP, required=True),
        Field("page", FieldType.STRING, required=True),
        Field("events", FieldType.INT64, required=True),
        Field("pane_index", FieldType.INT64, required=True),
    ),
)


def row(page, events, pane_index=0, start=T0):
    return {"window_start": start, "page": page, "events": events, "pane_index": pane_index}


def table_rows(url, table="page_metrics") -> list[tuple]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return sorted(tuple(r) for r in conn.exec_driver_sql(
                f"SELECT extract(epoch from window_start)::float8, page, events, pane_index FROM {table}"))
    finally:
        engine.dispose()


def upsert(run_batch, url, rows, batch_size=500, retry=RetryPolicy(attempts=1), before=None, check_dead=None):
    def build(p):
        pcoll = p | beam.Create(rows, reshuffle=False)
        if before is not None:
            pcoll = pcoll | "BeforeSink" >> beam.ParDo(before)
        dead = (pcoll | UpsertToDatabase(url, METRICS, batch_size=batch_size, retry=retry)
                | "ToRows" >> beam.Map(dead_letter_row, "test"))
        assert_that(dead, check_dead or equal_to([]))

    return run_batch(build)


def test_upsert_is_native_on_conflict_and_later_panes_win(postgres_url, run_batch, count_of):
    engine = create_engine(postgres_url)
    stmt = _upsert_statement(engine, METRICS.sqlalchemy_table(sa.MetaData()), METRICS.key)
    sql = str(stmt.compile(dialect=engine.dialect))
    assert "ON CONFLICT (window_start, page) DO UPDATE SET events = excluded.events" in sql
    engine.dispose()

    result = upsert(run_batch, postgres_url, [row("home", 3), row("home", 5, 1), row("cart", 1)])
    assert count_of(result, "rows_written") == 2
    upsert(run_batch, postgres_url, [row("cart", 4, 1), row("shop", 2)], batch_size=1)
    expected = [(T0, "cart", 4, 1), (T0, "home", 5, 1), (T0, "shop", 2, 0)]
    assert table_rows(postgres_url) == expected
    upsert(run_batch, postgres_url, [row("cart", 4, 1), row("shop", 2)])  # rerun: no change
    assert table_rows(postgres_url) == expected


@pytest.mark.parametrize("batch_size", [500, 3])
def test_rejected_rows_are_dead_lettered_one_by_one(postgres_url, run_batch, count_of, batch_size):
    rows = [row(f"p{i}", i) for i in range(8)] + [row("bad", None)]

    def check(actual):
        if [json.loads(d["payload"])["page"] for d in actual] != ["bad"]:
            raise BeamAssertException(f"unexpected dead letters {actual}")
        if "page_metrics: " not in actual[0]["reason"] or "null value" not in actual[0]["reason"]:
            raise BeamAssertException(f"reason does not name the table and error: {actual[0]}")

    result = upsert(run_batch, postgres_url, rows, batch_size=batch_size, check_dead=check)
    assert table_rows(postgres_url) == sorted((T0, f"p{i}", i, 0) for i in range(8))
    assert count_of(result, "rows_written") == 8 and count_of(result, "rows_rejected_by_sink") == 1


def test_enrich_from_postgres(postgres_url, run_batch, count_of):
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE users (user_id TEXT PRIMARY KEY, country TEXT, segment TEXT)")
        conn.exec_driver_sql("INSERT INTO users VALUES ('u1', 'DE', 'pro'), ('u2', 'FR', 'free')")
    engine.dispose()
    spec = LookupSpec("users", "user_id", "user_id", {"country": "country", "segment": "segment"},
                      defaults={"country": "unknown", "segment": "unknown"})
    events = [{"event_id": f"e{i}", "user_id": f"u{i % 3 + 1}"} for i in range(9)] + [
        {"event_id": "x", "user_id": "'; DROP TABLE users; --"}]
    found = {"u1": ("DE", "pro"), "u2": ("FR", "free")}
    expected = [{**e, "country": found.get(e["user_id"], ("unknown",))[0],
                 "segment": found.get(e["user_id"], (None, "unknown"))[1]} for e in events]

    def build(p):
        enriched = p | beam.Create(events, reshuffle=False) | EnrichFromDatabase(
            postgres_url, [spec], batch_size=4)
        assert_that(enriched.events, equal_to(expected), label="events")
        assert_that(enriched[DEAD_LETTER_TAG], equal_to([]), label="dead")

    result = run_batch(build)
    assert count_of(result, "lookup_key_missing") == 4
    assert count_of(result, "lookup_queries") == 1  # the table, read whole: every key is then cached


def test_clickstream_end_to_end_on_postgres(postgres_server, tmp_path):
    output, reference = postgres_server.create_database(), postgres_server.create_database()
    events = str(tmp_path / "events.jsonl")
    config = SampleConfig(events=1500)
    write_sample(events, config)
    build_reference_db(reference, config)
    acc = run(clickstream.PIPELINE, clickstream.build,
              [f"--input={events}", f"--output={output}", f"--reference_db={reference}"],
              clickstream.ClickstreamOptions)
    assert acc.balanced and acc.invalid > 0 and acc.duplicates > 0
    rows = read_rows(output, CLICKSTREAM_METRICS)
    assert len(rows) == acc.rows_written
    assert sum(r["events"] for r in rows.values()) == acc.aggregated
    assert {r["country"] for r in rows.values()} - {"unknown"}  # the lookups found users
    engine = create_engine(output)
    with engine.connect() as conn:
        kinds = dict(conn.exec_driver_sql(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'clickstream_metrics'").all())
        dead = conn.exec_driver_sql("SELECT count(*) FROM dead_letters WHERE stage = 'parse'").scalar()
    engine.dispose()
    assert kinds["window_start"] == "timestamp with time zone" and kinds["events"] == "bigint"
    assert dead == acc.invalid


def test_server_down_at_start_is_one_clear_error(own_postgres_server, tmp_path):
    url = own_postgres_server.url()
    own_postgres_server.stop()
    events = tmp_path / "events.jsonl"
    write_sample(str(events), SampleConfig(events=10))
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.clickstream", f"--input={events}", f"--output={url}",
         f"--reference_db=sqlite:///{tmp_path}/ref.db"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("clickstream: database postgresql://kappaflow@127.0.0.1:"), last
    assert f":{own_postgres_server.port}/postgres is not reachable" in last


class StopServerFn(beam.DoFn):
    """Stops the server when the `at`-th row passes; restarts it `restart_after` seconds later."""

    def __init__(self, server, at: int, restart_after: float | None) -> None:
        self._server = server
        self._at = at
        self._restart_after = restart_after

    def process(self, element):
        if element["events"] == self._at:
            self._server.stop()
            if self._restart_after is not None:
                threading.Timer(self._restart_after, self._server.start).start()
        yield element


def test_server_lost_mid_run_recovers_within_the_retries(own_postgres_server, run_batch, count_of):
    url = own_postgres_server.create_database()
    rows = [row(f"p{i}", i) for i in range(60)]
    result = upsert(run_batch, url, rows, batch_size=10,
                    retry=RetryPolicy(attempts=8, initial_backoff_seconds=0.5, max_backoff_seconds=2),
                    before=StopServerFn(own_postgres_server, at=25, restart_after=1.5))
    assert count_of(result, "sink_retries") >= 1  # the outage was hit
    assert count_of(result, "rows_written") == 60 and count_of(result, "rows_rejected_by_sink") == 0
    assert table_rows(url) == sorted((T0, f"p{i}", i, 0) for i in range(60))


def test_server_lost_mid_run_dead_letters_after_the_retries(own_postgres_server, run_batch, count_of):
    url = own_postgres_server.create_database()
    rows = [row(f"p{i}", i) for i in range(60)]

    def check(actual):
        pages = sorted(json.loads(d["payload"])["events"] for d in actual)
        if pages != list(range(20, 60)):
            raise BeamAssertException(f"dead letters for rows {pages}")
        # IP literals are redacted from every output (issue 14); the reason still names the port.
        if not all(d["stage"] == "sink" and "server at" in d["reason"] and "port" in d["reason"] for d in actual):
            raise BeamAssertException(f"reason does not name the server: {actual[0]}")

    result = upsert(run_batch, url, rows, batch_size=10,
                    retry=RetryPolicy(attempts=3, initial_backoff_seconds=0.1),
                    before=StopServerFn(own_postgres_server, at=25, restart_after=None), check_dead=check)
    # Rows 0-19 were written before the outage; the batches after it failed their retries, then
    # every row of them was tried on its own: each row is in exactly one place.
    assert count_of(result, "rows_written") == 20 and count_of(result, "rows_rejected_by_sink") == 40
    own_postgres_server.start()
    assert table_rows(url) == sorted((T0, f"p{i}", i, 0) for i in range(20))


def test_pipeline_loses_its_server_after_start_and_still_accounts_for_every_record(own_postgres_server, tmp_path):
    """The server passes the start-up check, then goes away: lookups are retried, then every
    record is dead-lettered (to SQLite here) as enrich-failed, and the accounting balances."""
    output, reference = own_postgres_server.create_database(), own_postgres_server.create_database()
    events, dead = str(tmp_path / "events.jsonl"), f"sqlite:///{tmp_path}/dead.db"
    config = SampleConfig(events=300)
    write_sample(events, config)
    build_reference_db(reference, config)

    def build_then_lose_server(p, opts):
        clickstream.build(p, opts)
        own_postgres_server.stop()

    acc = run(clickstream.PIPELINE, build_then_lose_server,
              [f"--input={events}", f"--output={output}", f"--reference_db={reference}",
               f"--dead_letter_output={dead}"], clickstream.ClickstreamOptions)
    assert acc.balanced and acc.aggregated == 0 and acc.rows_written == 0
    assert acc.enrich_failed == acc.read - acc.invalid - acc.duplicates > 0
    assert len(_reasons(dead, "parse")) == acc.invalid
    enrich = _reasons(dead, "enrich")
    assert len(enrich) == acc.enrich_failed and all("server at" in r and "port" in r for r in enrich)


def _reasons(url, stage):
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        reasons = [r for (r,) in conn.execute(sa.text("SELECT reason FROM dead_letters WHERE stage = :s"),
                                              {"s": stage})]
    engine.dispose()
    return reasons


def test_cdc_target_on_postgres_matches_sqlite_and_the_source(postgres_url, tmp_path):
    from kappaflow.samples.cdc import PRIMARY_KEYS, CdcSampleConfig
    from kappaflow.samples.cdc import write_sample as write_changes
    from kappaflow.tables import read_change_tables
    from pipelines import cdc

    sample = write_changes(str(tmp_path / "in"), CdcSampleConfig(changes=1500))
    sqlite_db = f"sqlite:///{tmp_path}/cdc.db"

    def apply(output):
        return run(cdc.PIPELINE, cdc.build, [f"--input={tmp_path}/in/*.jsonl", f"--output={output}",
                                             f"--primary_keys={PRIMARY_KEYS}"], cdc.CdcOptions)

    on_postgres, on_sqlite = apply(postgres_url), apply(sqlite_db)
    assert on_postgres.balanced and 0 < on_postgres.duplicates <= sample.redeliveries
    assert (on_postgres.applied, on_postgres.superseded, on_postgres.rejected) == (
        on_sqlite.applied, on_sqlite.superseded, on_sqlite.rejected)
    tables = read_change_tables(postgres_url)
    assert set(tables) == {"customers", "orders"} and tables == read_change_tables(sqlite_db)
    rerun = apply(postgres_url)  # versioned upserts: a rerun applies nothing
    assert rerun.balanced and rerun.applied == 0 and read_change_tables(postgres_url) == tables
