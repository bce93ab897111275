"""Debezium changes merged into BigQuery (bqemulator) end in the same tables as the SQL target."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdc_helpers import event
from fixtures_bigquery import PROJECT
from io_connectors.bigquery import BigQueryLocation
from io_connectors.bigquery_cdc import BigQueryChangeTables, merge_changes, merge_statement
from kappaflow.launcher import run
from kappaflow.samples.cdc import PRIMARY_KEYS, CdcSampleConfig, write_sample
from kappaflow.tables import read_change_tables
from pipelines import cdc
from test_bigquery_docs import run_doc_query
from test_cdc_sink import KEYS, Target, change, history

_DATASETS = itertools.count()


def bigquery_tables(emulator, dataset: str, tables: list[str], keys: dict) -> dict:
    """table → key → row, as read_change_tables reads the SQL target."""
    client = emulator.client()
    out = {}
    try:
        for table in tables:
            table_id = f"{PROJECT}.{dataset}.{table}"
            # JSON columns: the emulator answers queries with their text; the BigQuery client parses it.
            json_columns = {f.name for f in client.get_table(table_id).schema if f.field_type == "JSON"}
            out[table] = {tuple(row[k] for k in keys[table]): {
                c: json.loads(v) if c in json_columns and isinstance(v, str) else v for c, v in row.items()}
                for row in client.query(f"SELECT * FROM `{table_id}`").result()}
    finally:
        client.close()
    return out


def test_merge_statement_replaces_only_with_a_greater_version():
    sql = merge_statement("p.d.orders", "p.d.stage", ("store_id", "order_id"), ["store_id", "order_id", "qty"])
    assert "QUALIFY ROW_NUMBER() OVER (PARTITION BY `store_id`, `order_id` ORDER BY _cdc_version DESC) = 1" in sql
    assert "WHEN MATCHED AND S._cdc_version > T._cdc_version THEN UPDATE SET `qty` = S.`qty`, " in sql
    assert "SET `store_id`" not in sql and ", `store_id` =" not in sql  # keys are never updated


@pytest.mark.slow
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_shuffled_and_redelivered_changes_merge_to_the_sql_tables(bigquery_emulator, tmp_path, data):
    """The CDC property of tests/test_cdc_sink.py: any arrival order and batching of one change log,
    with re-deliveries, gives the SQLite target's table, tombstones and versions included."""
    steps = data.draw(st.lists(st.lists(st.sampled_from("ud"), max_size=4), min_size=1, max_size=3))
    log = history(steps)
    arrival = data.draw(st.permutations(log + data.draw(st.lists(st.sampled_from(log), max_size=3))))
    dataset = f"cdc_prop_{next(_DATASETS)}"
    bigquery_emulator.dataset(dataset)
    client = bigquery_emulator.client()
    tables = BigQueryChangeTables(client, BigQueryLocation(PROJECT, dataset), KEYS)
    sql, start, counted = Target(), 0, 0
    while start < len(arrival):
        size = data.draw(st.integers(2, 8))
        batch = arrival[start:start + size]
        sql.apply(*batch)
        outcome = merge_changes(client, tables, "customers", list(batch), str(tmp_path))
        counted += len(outcome.applied) + len(outcome.superseded) + len(outcome.duplicates)
        start += size
    client.close()
    assert bigquery_tables(bigquery_emulator, dataset, ["customers"], KEYS.tables)["customers"] == sql.rows()
    assert counted == len(arrival)


@pytest.mark.slow
def test_integer_column_widens_to_float_in_bigquery_too(bigquery_emulator, tmp_path):
    """As for SQL: a float after a batch of integers widens the column instead of conflicting."""
    dataset = f"cdc_widen_{next(_DATASETS)}"
    bigquery_emulator.dataset(dataset)
    client = bigquery_emulator.client()
    tables = BigQueryChangeTables(client, BigQueryLocation(PROJECT, dataset), KEYS)
    try:
        for batch in ([change(event("c", {"id": 1, "price": 3}, lsn=1))],
                      [change(event("c", {"id": 2, "price": 2.5}, lsn=2))]):
            assert not merge_changes(client, tables, "customers", batch, str(tmp_path)).rejected
    finally:
        client.close()
    rows = bigquery_tables(bigquery_emulator, dataset, ["customers"], KEYS.tables)["customers"]
    # The column's type itself is not checked: bqemulator 1.4 converts the stored column but its
    # catalog keeps saying INT64 (BigQuery says FLOAT64; a later worker's ALTER is then a no-op).
    assert {key: row["price"] for key, row in rows.items()} == {(1,): 3.0, (2,): 2.5}


def _run(inputs: str, output: str, tmp_path, *extra: str):
    return run(cdc.PIPELINE, cdc.build, [f"--input={inputs}", f"--output={output}", f"--primary_keys={PRIMARY_KEYS}",
                                         f"--temp_location={tmp_path}", *extra], cdc.CdcOptions)


@pytest.mark.slow
def test_cdc_pipeline_into_bigquery_equals_sqlite_in_batch_and_streaming_and_a_rerun_changes_nothing(
        bigquery_emulator, tmp_path):
    write_sample(str(tmp_path / "in"), CdcSampleConfig(changes=300))
    with open(tmp_path / "in" / "03-conflict.jsonl", "w", encoding="utf-8") as handle:  # a type conflict
        handle.write(json.dumps(event("u", {"customer_id": 1, "active": "maybe"}, lsn=10**12,
                                      table="customers")) + "\n")
    inputs, sqlite = f"{tmp_path}/in/*.jsonl", f"sqlite:///{tmp_path}/replica.db"
    endpoint = f"--bigquery_endpoint={bigquery_emulator.host}"
    reference = _run(inputs, sqlite, tmp_path)
    expected = read_change_tables(sqlite)
    keys = {t: k for t, k in (part.split(":") for part in PRIMARY_KEYS.split(","))}
    keys = {t: tuple(k.split("+")) for t, k in keys.items()}
    for name, extra in (("cdc_batch", []), ("cdc_stream", ["--streaming", "--replay_chunk_size=200"])):
        url = bigquery_emulator.dataset(name)
        acc = _run(inputs, url, tmp_path, endpoint, *extra)
        assert acc.balanced, acc
        assert (acc.read, acc.invalid, acc.rejected, acc.duplicates) == (
            reference.read, reference.invalid, reference.rejected, reference.duplicates)
        assert bigquery_tables(bigquery_emulator, name, ["customers", "orders"], keys) == expected
    # Dead letters, the type conflict included, land in BigQuery as they do in SQL.
    client = bigquery_emulator.client()
    reasons = [r.reason for r in client.query(
        f"SELECT reason FROM `{PROJECT}.cdc_batch.dead_letters_latest` WHERE stage = 'apply'").result()]
    client.close()
    assert reference.rejected == 1 and reasons == [
        "type conflict: customers.active is BOOL: expected a boolean, got str 'maybe'"]
    live = {(r["customer_id"],): r for r in run_doc_query(bigquery_emulator, "cdc_as_of_now", "cdc_batch")}
    assert live == {k: {c: v for c, v in row.items() if not c.startswith("_cdc_")}
                    for k, row in expected["customers"].items() if not row["_cdc_deleted"]}

    rerun = _run(inputs, bigquery_emulator.dataset("cdc_batch"), tmp_path, endpoint)
    assert rerun.balanced and rerun.applied == 0
    assert bigquery_tables(bigquery_emulator, "cdc_batch", ["customers", "orders"], keys) == expected
