"""The runner preflight: an unsupported source/runner combination stops in one line, before any job."""

from __future__ import annotations

import pytest

from kappaflow.launcher import run
from kappaflow.runner_support import FEATURES, RUNNERS, table
from pipelines import clickstream


def _run(tmp_path, *args):
    return run("clickstream", clickstream.build,
               [f"--output=sqlite:///{tmp_path}/o.db", f"--reference_db=sqlite:///{tmp_path}/r.db", *args],
               clickstream.ClickstreamOptions)


@pytest.mark.parametrize("args,message", [
    (("--runner=FlinkRunner", "--streaming", "--input_subscription=projects/p/subscriptions/s"),
     r"^clickstream: Python Pub/Sub read \(--input_subscription\) is not supported on FlinkRunner: "
     r"run it with --runner=DirectRunner .* or read the events from Kafka"),
    (("--runner=PrismRunner", "--streaming", "--input_subscription=projects/p/subscriptions/s"),
     r"not supported on PrismRunner"),
    (("--streaming", "--input_subscription=projects/p/subscriptions/s", "--pubsub_id_label=event_id"),
     r"--pubsub_id_label\) is not supported on DirectRunner: drop --pubsub_id_label"),
    (("--streaming", "--input=kafka://127.0.0.1:9/clicks"),
     r"^clickstream: Java transforms: Kafka .* not supported on DirectRunner: run it with --runner=PrismRunner"),
    (("--input=x.jsonl", "--output=bigquery:p.d", "--bigquery_method=STORAGE_WRITE_API"),
     r"^clickstream: Java transforms: BigQuery Storage Write API .* not supported on DirectRunner: run it with "
     r"--runner=PrismRunner or --runner=FlinkRunner, or use --bigquery_method=FILE_LOADS"),
])
def test_unsupported_combination_stops_in_one_line_naming_the_alternative(tmp_path, args, message):
    with pytest.raises(SystemExit, match=message) as stopped:
        _run(tmp_path, *args)
    assert "\n" not in str(stopped.value)


def test_table_has_a_row_per_feature_and_a_column_per_runner():
    lines = table().splitlines()
    assert all(runner in lines[0] for runner in RUNNERS)
    for feature, line in zip(FEATURES, lines[1:]):
        assert line.startswith(feature.name)
        assert [cell.strip() for cell in line.split("|")[1:]] == [
            "yes" if runner in feature.runners else "no" for runner in RUNNERS]
