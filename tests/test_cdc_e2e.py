"""End to end: the CDC pipeline in batch and as a streaming replay, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import sqlalchemy as sa

from cdc_helpers import event, fixture
from kappaflow.core import metrics
from kappaflow.launcher import run
from kappaflow.samples.cdc import PRIMARY_KEYS, CdcSampleConfig, write_sample
from kappaflow.tables import read_change_tables
from pipelines import cdc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(inputs: str, output: str, *extra: str, keys: str = PRIMARY_KEYS):
    return run(cdc.PIPELINE, cdc.build, [f"--input={inputs}", f"--output={output}", f"--primary_keys={keys}",
                                         *extra], cdc.CdcOptions)


def _live(tables: dict) -> dict:
    return {name: {k: {c: v for c, v in r.items() if not c.startswith("_cdc_")}
                   for k, r in rows.items() if not r["_cdc_deleted"]}
            for name, rows in tables.items()}


def _expected(sample, live: dict) -> dict:
    """The generator's final source tables, with the columns the target tables have."""
    out = {}
    for name, rows in sample.expected.items():
        columns = {c for row in live[name].values() for c in row}
        out[name] = {k: {c: row.get(c) for c in columns} for k, row in rows.items()}
    return out


def _write_lines(path, envelopes) -> None:
    path.write_text("".join(json.dumps(e) + "\n" for e in envelopes))


def test_arrival_order_does_not_change_the_tables(tmp_path, run_batch, run_prism, count_of):
    """One change log, in order through the batch pipeline and reversed with re-deliveries through
    a streaming replay: the same tables."""
    log = [fixture(f"postgresql_{n}") for n in ("create", "update", "delete")] + [
        event("c", {"id": 1, "first_name": "Anne", "email": "anne@new.example"}, lsn=46523200),  # re-created
        event("r", {"id": 2, "first_name": "Bo"}, lsn=100),
        event("u", {"id": 2, "first_name": "Bob", "vip": True}, lsn=46523300),  # a new column
        event("d", None, {"id": 3}, lsn=46523400),
        event("c", {"id": 3, "first_name": "Cy"}, lsn=46523000),  # older than its delete
    ]
    _write_lines(tmp_path / "ordered.jsonl", log)
    _write_lines(tmp_path / "shuffled.jsonl", list(reversed(log)) + log[2:5])
    results = {}
    for name, runner, extra in (("ordered", run_batch, []), ("shuffled", run_prism, ["--streaming"])):
        opts = cdc.CdcOptions([f"--input={tmp_path}/{name}.jsonl", f"--output=sqlite:///{tmp_path}/{name}.db",
                               "--primary_keys=customers:id", "--replay_chunk_size=2", *extra])
        result = runner(lambda p, opts=opts: cdc.build(p, opts))
        results[name] = read_change_tables(f"sqlite:///{tmp_path}/{name}.db")
        outcomes = [count_of(result, m) for m in (metrics.APPLIED, metrics.SUPERSEDED, metrics.DUPLICATES)]
        assert sum(outcomes) == count_of(result, metrics.READ) == (8 if name == "ordered" else 11)
        # The versioned apply counts a re-delivery as a duplicate when the row holds its very
        # version, and as superseded when a newer change got there first.
        assert outcomes[2] <= (3 if name == "shuffled" else 0)
    assert results["ordered"] == results["shuffled"]
    assert _live(results["ordered"]) == {"customers": {
        (1,): {"id": 1, "first_name": "Anne", "last_name": None, "email": "anne@new.example", "vip": None},
        (2,): {"id": 2, "first_name": "Bob", "last_name": None, "email": None, "vip": True},
    }}


@pytest.mark.slow
def test_batch_equals_streaming_replay_and_the_source(tmp_path):
    sample = write_sample(str(tmp_path / "in"), CdcSampleConfig(changes=4000))
    inputs = f"{tmp_path}/in/*.jsonl"
    batch_db, stream_db = f"sqlite:///{tmp_path}/batch.db", f"sqlite:///{tmp_path}/stream.db"
    batch = _run(inputs, batch_db)
    streaming = _run(inputs, stream_db, "--streaming", "--replay_chunk_size=200")

    for acc in (batch, streaming):
        assert acc.balanced, acc
        # Re-deliveries of a version the row still holds are duplicates; of an older one, superseded.
        assert 0 < acc.duplicates <= sample.redeliveries <= acc.duplicates + acc.superseded
        assert acc.invalid + acc.rejected == sample.bad_events and acc.rejected > 0
    # How re-deliveries split between duplicates and superseded depends on arrival order; the sum does not.
    assert (batch.read, batch.invalid, batch.rejected, batch.applied + batch.superseded + batch.duplicates) == (
        streaming.read, streaming.invalid, streaming.rejected,
        streaming.applied + streaming.superseded + streaming.duplicates)
    batch_tables, stream_tables = read_change_tables(batch_db), read_change_tables(stream_db)
    assert set(batch_tables) == {"customers", "orders"}
    assert batch_tables == stream_tables  # every column, versions and tombstones included
    live = _live(batch_tables)
    assert live == _expected(sample, live)
    assert any(row.get("loyalty_points") is not None for row in live["customers"].values())

    # A rerun on the same database changes nothing: every change is a duplicate or superseded.
    rerun = _run(inputs, batch_db)
    assert rerun.balanced and rerun.applied == 0
    assert read_change_tables(batch_db) == batch_tables


@pytest.mark.slow
def test_cli_writes_tables_dead_letters_and_report(tmp_path):
    sample = write_sample(str(tmp_path / "in"), CdcSampleConfig(changes=2500, bad_share=0.02))
    output, report = f"sqlite:///{tmp_path}/out.db", tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cdc", f"--input={tmp_path}/in/*.jsonl", f"--output={output}",
         f"--primary_keys={PRIMARY_KEYS}", f"--report={report}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "accounting balanced" in proc.stdout and "FnApiRunner" in proc.stdout
    summary = json.loads(report.read_text())
    assert summary["balanced"] and summary["read"] == sum(len(lines) for lines in sample.files.values())
    engine = sa.create_engine(output)
    with engine.connect() as conn:
        letters = conn.execute(
            sa.text("SELECT stage, reason, origin FROM dead_letters WHERE pipeline = 'cdc'")).all()
    engine.dispose()
    assert len(letters) == sample.bad_events == summary["invalid"] + summary["rejected"]
    reasons = " | ".join(reason for _, reason, _ in letters)
    for expected in ("bad JSON", "field op: is required", "without its image", "no key: customers.customer_id",
                     "unknown table 'audit_log'", "type conflict: customers.active is BOOL"):
        assert expected in reasons
    assert all(origin and ".jsonl:" in origin for _, _, origin in letters)


def test_output_must_be_a_database(tmp_path):
    from kappaflow.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="--output must be a database URL .* or bigquery:PROJECT.DATASET"):
        _run(str(tmp_path / "*.jsonl"), f"file://{tmp_path}/lake")
