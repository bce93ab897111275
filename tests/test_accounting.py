"""The accounting is exact: a record lost between the read and the rows makes the run UNBALANCED."""

from __future__ import annotations

import apache_beam as beam
import pytest

from kappaflow.launcher import run
from kappaflow.samples.clickstream import SampleConfig, build_reference_db, write_sample
from pipelines import clickstream
from transforms.aggregate import PartiallyAggregateFn


def _sample(tmp_path):
    config = SampleConfig(events=400, seed=7)
    events, reference = str(tmp_path / "events.jsonl"), f"sqlite:///{tmp_path}/reference.db"
    write_sample(events, config)
    build_reference_db(reference, config)
    return events, reference


@pytest.mark.parametrize("mode", [(), ("--streaming",)], ids=["batch", "replay"])
def test_a_record_dropped_before_the_aggregation_makes_the_run_unbalanced(tmp_path, monkeypatch, mode):
    events, reference = _sample(tmp_path)
    args = [f"--input={events}", f"--reference_db={reference}", f"--output=sqlite:///{tmp_path}/out.db",
            "--progress=off", *mode]
    honest = run(clickstream.PIPELINE, clickstream.build, args, clickstream.ClickstreamOptions)
    assert honest.balanced, honest

    real = PartiallyAggregateFn.process

    def lose_one(self, event, windowed=beam.DoFn.WindowedValueParam):
        if event["event_id"] == "e000000100":  # a stage that silently loses a record
            return iter(())
        return real(self, event, windowed)

    monkeypatch.setattr(PartiallyAggregateFn, "process", lose_one)
    lossy = run(clickstream.PIPELINE, clickstream.build,
                [*args[:2], f"--output=sqlite:///{tmp_path}/lossy.db", *args[3:]], clickstream.ClickstreamOptions)
    assert not lossy.balanced and "UNBALANCED" in lossy.summary()
    assert lossy.aggregated == honest.aggregated - 1
    assert (lossy.read, lossy.invalid, lossy.duplicates, lossy.too_late) == (
        honest.read, honest.invalid, honest.duplicates, honest.too_late)


def test_the_accounting_balances_the_outcomes_the_pipeline_declares():
    from kappaflow.launcher import Accounting
    from pipelines import cdc, iot_sensors

    counts = dict(pipeline="x", runner="r", mode="batch", read=10, invalid=1, duplicates=2, too_late=0,
                  enrich_failed=0, aggregated=7, rows_written=3, dead_letters_written=1, seconds=1.0)
    declared = clickstream.ClickstreamOptions.OUTCOMES
    assert Accounting(**counts, outcomes=declared).balanced
    # A record counted where this pipeline declares no outcome is a hole, even if the sum adds up.
    assert not Accounting(**{**counts, "aggregated": 6}, applied=1, outcomes=declared).balanced
    assert Accounting(**{**counts, "aggregated": 6}, applied=1).balanced  # every outcome declared (the default)
    assert {"applied", "superseded", "rejected"} <= set(cdc.CdcOptions.OUTCOMES)
    assert "excluded" in iot_sensors.IotSensorsOptions.OUTCOMES and "excluded" not in declared


def test_a_dead_letter_the_dead_letter_table_refuses_is_counted_and_fails_the_accounting(tmp_path):
    import sqlite3

    events, reference = _sample(tmp_path)
    refusing = tmp_path / "refusing.db"  # a dead_letters table that refuses every row
    with sqlite3.connect(refusing) as db:
        db.execute("CREATE TABLE dead_letters (dead_letter_id TEXT PRIMARY KEY, "
                   "pipeline TEXT CHECK (pipeline IS NULL))")
    args = [f"--input={events}", f"--reference_db={reference}", f"--output=sqlite:///{tmp_path}/out.db",
            f"--dead_letter_output=sqlite:///{refusing}", "--progress=off"]
    acc = run(clickstream.PIPELINE, clickstream.build, args, clickstream.ClickstreamOptions)
    assert acc.invalid > 0 and acc.dead_letters_written == 0
    assert acc.dead_letters_failed == acc.invalid
    assert not acc.balanced and "dead letters LOST" in acc.summary() and "UNBALANCED" in acc.summary()
