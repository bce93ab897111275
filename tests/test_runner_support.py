"""The runner preflight: an unsupported source/runner combination stops in one line, before any job."""

from __future__ import annotations

import pytest

from apache_beam.options.pipeline_options import PipelineOptions

from io_connectors.pubsub import JavaPubSub
from kappaflow import cli, java_services
from kappaflow.launcher import run
from kappaflow.runner_support import FEATURES, RUNNERS, check_runner_support, table
from kappaflow.wiring import java_pubsub
from pipelines import clickstream


def _run(tmp_path, *args):
    return run("clickstream", clickstream.build,
               [f"--output=sqlite:///{tmp_path}/o.db", f"--reference_db=sqlite:///{tmp_path}/r.db", *args],
               clickstream.ClickstreamOptions)


@pytest.mark.parametrize("args,message", [
    (("--streaming", "--input_subscription=projects/p/subscriptions/s", "--pubsub_id_label=event_id"),
     r"--pubsub_id_label\) is not supported on DirectRunner: drop --pubsub_id_label"),
    (("--streaming", "--input=kafka://127.0.0.1:9/clicks"),
     r"^clickstream: Java transforms: Kafka .* not supported on DirectRunner: run it with --runner=PrismRunner"),
    (("--input=x.jsonl", "--output=bigquery:p.d", "--bigquery_method=STORAGE_WRITE_API"),
     r"^clickstream: Java transforms: BigQuery Storage Write API .* not supported on DirectRunner: run it with "
     r"--runner=PrismRunner or --runner=FlinkRunner, or use --bigquery_method=FILE_LOADS"),
    (("--input=kafka://127.0.0.1:9/clicks", "--streaming", "--output=bigquery:p.d", "--runner=PrismRunner",
      "--bigquery_method=STORAGE_WRITE_API"),
     r"in streaming \(exactly-once\) is not supported on PrismRunner: Prism 2.70 cannot build its exactly-once "
     r"streams \(no beam:coder:sharded_key:v1\): run it with --runner=FlinkRunner"),
    (("--input=x.jsonl", "--streaming", "--output=bigquery:p.d", "--runner=FlinkRunner",
      "--bigquery_method=STORAGE_WRITE_API"),
     r"in a streaming replay of files is not supported on FlinkRunner: a replay ends, and Beam 2.70's Flink "
     r"runner never finishes"),
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


@pytest.mark.parametrize("runner,through_java", [
    ("DirectRunner", False), ("DataflowRunner", False), ("PrismRunner", True), ("prism", True),
    ("FlinkRunner", True),
])
def test_pubsub_read_runs_on_every_runner_through_java_where_python_has_none(monkeypatch, runner, through_java):
    """Beam's Python Pub/Sub read exists only on the DirectRunner and Dataflow (apache/beam#27443):
    on Prism and Flink the wiring picks Beam's Java PubsubIO, pointed at PUBSUB_EMULATOR_HOST."""
    options = PipelineOptions([f"--runner={runner}", "--streaming", "--input_subscription=projects/p/subscriptions/s"])
    check_runner_support(options, options.view_as(clickstream.ClickstreamOptions))  # no error
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085")
    java = java_pubsub(options)
    if not through_java:
        assert java is None
        return
    assert java == JavaPubSub("http://127.0.0.1:8085", None, java_services.expansion_service)
    assert java.java_options() == {
        "pubsubRootUrl": "http://127.0.0.1:8085",
        "credentialFactoryClass": "org.apache.beam.sdk.extensions.gcp.auth.NoopCredentialFactory"}
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST")
    # Google's service: the Java client's default root URL and the workers' own credentials.
    assert java_pubsub(options).java_options() == {}


@pytest.mark.parametrize("runner", ["PrismRunner", "FlinkRunner"])
def test_the_command_refuses_pubsub_id_label_off_dataflow_in_one_line_and_exit_2(capsys, monkeypatch, tmp_path,
                                                                                 runner):
    """Only Dataflow dedups by the id attribute; on Prism and Flink (Beam's Java read) the command
    stops before asking any server (nothing answers at the emulator address) and names the
    supported alternatives."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:9")
    status = cli.main(["clickstream", f"--runner={runner}", "--streaming",
                       "--input_subscription=projects/p/subscriptions/s", "--pubsub_id_label=event_id",
                       f"--output=sqlite:///{tmp_path}/o.db", f"--reference_db=sqlite:///{tmp_path}/r.db"])
    err = capsys.readouterr().err
    assert status == 2 and err.strip().count("\n") == 0, err
    assert err.startswith(f"kappaflow clickstream: error: Pub/Sub id attribute (--pubsub_id_label) is not "
                          f"supported on {runner}: drop --pubsub_id_label: the pipelines' own dedup (by event id)"), err
    assert "Dataflow only" in err, err
