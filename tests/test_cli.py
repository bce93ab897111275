"""The `kappaflow` command: grouped --help, one-line configuration errors (exit 2) before anything
runs, dry runs without Google credentials, --max_invalid_ratio, CDC flags Beam knows."""

from __future__ import annotations

import importlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from kappaflow import cli, launcher
from kappaflow.errors import ConfigurationError
from kappaflow.flex_template import options_class, pipeline_names
from kappaflow.options import KafkaOptions
from pipelines import cdc, clickstream
from conftest import clickstream_sample, registered_actions
from fixtures_servers import free_port

ROOT = Path(__file__).resolve().parent.parent



@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    work = tmp_path_factory.mktemp("cli")
    clickstream_sample(work, events=400, seed=7)
    return work


def _command(capsys, name, build, cls, argv):
    status = cli.run_pipeline_command(name, build, cls, argv)
    out, err = capsys.readouterr()
    return status, out, err


def _clickstream(capsys, sample, *argv, reference=None):
    base = [f"--input={sample}/events.jsonl", f"--reference_db={reference or f'sqlite:///{sample}/ref.db'}",
            f"--output=sqlite:///{sample}/out.db"]
    return _command(capsys, "clickstream", clickstream.build, clickstream.ClickstreamOptions, [*base, *argv])


@pytest.mark.parametrize("name", pipeline_names())
def test_help_lists_every_option_of_the_pipeline_in_a_group(name, capsys):
    cls = options_class(name)
    groups = cli.option_groups()
    ours = [a.dest for a in (*registered_actions(cls), *registered_actions(KafkaOptions))]  # every one reads Kafka
    assert [d for d in ours if d not in groups] == []  # a new option must be placed in a group
    assert cli.run_pipeline_command(name, None, cls, ["--help"]) == 0
    text = capsys.readouterr().out
    for dest in ours:
        assert f"--{dest}" in text
    for title in ("input", "output", "windows and lateness", "dedup", "enrichment", "replay", "runner"):
        assert f"{title} options:" in text
    assert "--help-beam" in text and "--streaming" in text and "--runner" in text


def test_help_shows_the_pipelines_own_defaults_with_units(capsys):
    cli.run_pipeline_command("iot_sensors", None, options_class("iot_sensors"), ["--help"])
    iot = " ".join(capsys.readouterr().out.split())
    cli.run_pipeline_command("clickstream", None, clickstream.ClickstreamOptions, ["--help"])
    click = " ".join(capsys.readouterr().out.split())
    assert "[default: 10 s]" in iot and "[default: 60 s]" in click  # --window_seconds per pipeline
    assert "[default: 2000 records]" in click  # --replay_chunk_size
    assert "[default: 90 °C]" in iot


def test_help_beam_shows_beams_options_only(capsys):
    assert cli.run_pipeline_command("clickstream", None, clickstream.ClickstreamOptions, ["--help-beam"]) == 0
    text = capsys.readouterr().out
    assert "--temp_location" in text and "--flink_master" in text
    assert "--window_seconds" not in text


@pytest.mark.parametrize("argv, expected", [
    (["--windw_seconds=30"], "unknown option --windw_seconds; did you mean --window_seconds?"),
    (["--window_seconds=0"], "--window_seconds=0: must be > 0 seconds; e.g. --window_seconds=60"),
    (["--window_seconds=abc"], "argument --window_seconds: invalid float value: 'abc'"),
    (["--progress=fast"], "argument --progress: invalid choice: 'fast'"),
    (["--max_invalid_ratio=2"], "--max_invalid_ratio=2: must be a share between 0 and 1"),
    (["--input=/no/such/dir/*.jsonl"], "--input: no input file matches '/no/such/dir/*.jsonl'"),
    (["stray"], "unexpected argument 'stray'"),
    (["--report=/no/such/dir/run.html"], "--report=/no/such/dir/run.html: the folder /no/such/dir does not exist"),
])
def test_a_wrong_command_line_is_one_line_and_exit_2(capsys, sample, argv, expected):
    status, out, err = _clickstream(capsys, sample, *argv)
    assert status == 2
    assert err.strip().count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith("kappaflow clickstream: error: ") and expected in err, err
    assert not os.path.exists(f"{sample}/out.db")  # nothing ran


def test_missing_required_options_name_the_option(capsys, sample):
    status, _, err = _command(capsys, "clickstream", clickstream.build, clickstream.ClickstreamOptions, [])
    assert status == 2 and "--input is required" in err
    status, _, err = _command(capsys, "clickstream", clickstream.build, clickstream.ClickstreamOptions,
                              [f"--input={sample}/events.jsonl", f"--output=sqlite:///{sample}/out.db"])
    assert status == 2 and "--reference_db is required" in err, err
    status, _, err = _command(capsys, "cdc", cdc.build, cdc.CdcOptions,
                              [f"--input={sample}/events.jsonl", f"--output=sqlite:///{sample}/out.db"])
    assert status == 2 and "--primary_keys is required" in err, err
    assert not os.path.exists(f"{sample}/out.db")


def test_an_incomplete_or_unreachable_reference_db_stops_before_the_run(capsys, sample, tmp_path):
    no_users = tmp_path / "no_users.db"
    with sqlite3.connect(no_users) as conn:
        conn.execute("CREATE TABLE products (product_id TEXT, category TEXT)")
    status, _, err = _clickstream(capsys, sample, reference=f"sqlite:///{no_users}")
    assert status == 2
    assert "--reference_db:" in err and "has no users table (needed columns: country, segment, user_id)" in err
    partial = tmp_path / "partial.db"
    with sqlite3.connect(partial) as conn:
        conn.execute("CREATE TABLE users (user_id TEXT, country TEXT)")
        conn.execute("CREATE TABLE products (product_id TEXT, category TEXT)")
    status, _, err = _clickstream(capsys, sample, reference=f"sqlite:///{partial}")
    assert status == 2 and "table users" in err and "lacks column(s) segment" in err, err
    status, _, err = _clickstream(capsys, sample, reference=f"sqlite:///{tmp_path}/missing.db")
    assert status == 2 and "missing.db does not exist" in err
    assert not os.path.exists(tmp_path / "missing.db")  # not created by the check
    down = f"postgresql://etl@127.0.0.1:{free_port()}/reference"
    status, _, err = _clickstream(capsys, sample, reference=down)
    assert status == 2 and "--reference_db: " in err and "is not reachable" in err and "start the server" in err
    assert not os.path.exists(f"{sample}/out.db")


def test_unknown_pipeline_gets_a_suggestion(capsys):
    assert cli.main(["clikstream"]) == 2
    assert "did you mean clickstream?" in capsys.readouterr().err
    assert cli.main(["iot-sensors", "--help"]) == 0  # the console-script spelling works too
    assert "--max_clock_skew_seconds" in capsys.readouterr().out


def test_max_invalid_ratio_fails_a_run_with_too_many_dead_letters(capsys, sample):
    # ~0.5% of the sample is malformed: a limit of 0 fails the run after it finished.
    status, out, err = _clickstream(capsys, sample, "--max_invalid_ratio=0", "--progress=off")
    assert status == 1, err
    assert "accounting balanced" in out
    assert "went to the dead letters, more than --max_invalid_ratio=0" in err.strip().splitlines()[-1]


def test_max_invalid_ratio_counts_every_dead_letter_category():
    from kappaflow.launcher import Accounting

    acc = Accounting(pipeline="x", runner="r", mode="batch", read=100, invalid=2, duplicates=50, too_late=1,
                     enrich_failed=1, aggregated=46, rows_written=3, dead_letters_written=4, seconds=1.0)
    assert cli._check_ratio("x", acc, None) is None  # off by default
    assert cli._check_ratio("x", acc, 0.04) is None  # 4 of 100: not more than the limit
    assert "4 of 100 records read (4.0%)" in cli._check_ratio("x", acc, 0.039)


def test_dataflow_dry_run_from_the_command_line_needs_no_credentials(capsys, caplog, monkeypatch, tmp_path):
    from kappaflow import options

    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "none.json"))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.delenv("KAPPAFLOW_PII_SALT", raising=False)
    monkeypatch.setattr(options, "_warned_default_salt", False)
    status = cli.main(
        ["clickstream", "--runner=DataflowRunner", "--dry_run=True",
         "--project=acme-analytics-prod", "--region=europe-west1", "--temp_location=gs://acme-tmp/tmp",
         "--input=gs://acme-raw/clickstream/*.jsonl.gz", "--output=bigquery:acme-analytics-prod.kappaflow",
         "--reference_db=postgresql://etl@10.1.2.3/ref"])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "dry run on DataflowRunner: the options are valid" in out
    # A non-local run with the built-in salt says so, once.
    assert sum("built-in salt" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("name, extra", [("clickstream", ["--reference_db=sqlite:///ref.db"]),
                                         ("cdc", ["--primary_keys=t1:id,t2:id"])])
def test_kafka_input_with_several_servers_and_topics_builds_the_job(capsys, monkeypatch, tmp_path, name, extra):
    """The commas of a kafka:// URL separate servers and topics; they are no file globs (check_input
    once read `b2:9092/t1` as a missing file). Java's expansion is stubbed: everything up to it runs
    as for a user, and the stub sees what KafkaIO would get."""
    import apache_beam as beam
    from apache_beam.io import kafka

    from kappaflow import java_services

    seen = {}

    class ReadFromKafka(beam.PTransform):
        create_time_policy = kafka.ReadFromKafka.create_time_policy

        def __init__(self, **kwargs):
            super().__init__()
            seen.update(kwargs)

        def expand(self, pbegin):
            return pbegin | beam.Create([])

    monkeypatch.setattr(kafka, "ReadFromKafka", ReadFromKafka)
    monkeypatch.setattr(java_services, "expansion_service", lambda pool=None: "localhost:1")
    status = cli.main([name, "--input=kafka://b1:9092,b2:9092/t1,t2", "--streaming", "--runner=FlinkRunner",
                       "--dry_run=True", f"--output=sqlite:///{tmp_path}/out.db", *extra])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "the options are valid" in out
    assert seen["consumer_config"]["bootstrap.servers"] == "b1:9092,b2:9092"
    assert seen["topics"] == ["t1", "t2"]


def test_a_malformed_kafka_url_is_one_line_and_exit_2(capsys, tmp_path):
    status = cli.main(["clickstream", "--input=kafka://b1/t1", "--streaming", "--reference_db=sqlite:///ref.db"])
    assert status == 2
    assert capsys.readouterr().err.strip() == ("kappaflow clickstream: error: --input=kafka://b1/t1: expected "
                                               "kafka://HOST:PORT[,HOST:PORT]/TOPIC[,TOPIC]")


def test_cdc_primary_keys_are_known_to_beams_parser(caplog):
    from apache_beam.options.pipeline_options import PipelineOptions

    everything = PipelineOptions(["--primary_keys=a:b", "--apply_batch_size=7"]).get_all_options(
        display_warnings=True)
    assert (everything["primary_keys"], everything["apply_batch_size"]) == ("a:b", 7)
    assert not [r for r in caplog.records if "Unparseable" in r.getMessage()]


@pytest.mark.parametrize("flag, owners", [
    ("--reference_db=sqlite:///ref.db", "clickstream and iot_sensors"),
    ("--input_subscription=projects/p/subscriptions/s", "clickstream and iot_sensors"),
    ("--window_seconds=60", "clickstream and iot_sensors"),
    ("--dedup_horizon_seconds=60", "clickstream and iot_sensors"),
    ("--max_clock_skew_seconds=5", "iot_sensors"), ("--alerts_topic=projects/p/topics/t", "iot_sensors"),
])
def test_cdc_refuses_the_flags_of_other_pipelines(capsys, tmp_path, flag, owners):
    (tmp_path / "changes.jsonl").write_text("")
    status, _, err = _command(capsys, "cdc", cdc.build, cdc.CdcOptions,
                              [f"--input={tmp_path}/changes.jsonl", "--primary_keys=t:id", flag])
    assert status == 2
    assert err.strip() == (f"kappaflow cdc: error: {flag.split('=')[0]} is not an option of cdc but of {owners}; "
                           "kappaflow cdc --help lists its options")


@pytest.mark.parametrize("name, flag, owner", [
    ("clickstream", "--primary_keys=t:id", "cdc"), ("clickstream", "--archive=/tmp/a", "iot_sensors"),
    ("iot_sensors", "--apply_batch_size", "cdc"),  # the value in the next word
])
def test_each_pipeline_refuses_the_flags_of_the_others(capsys, tmp_path, name, flag, owner):
    module = importlib.import_module(f"pipelines.{name}")
    (tmp_path / "in.jsonl").write_text("")
    value = [] if "=" in flag else ["7"]
    argv = [f"--input={tmp_path}/in.jsonl", "--reference_db=sqlite:///ref.db", flag, *value]
    status, _, err = _command(capsys, name, module.build, options_class(name), argv)
    assert (status, err.strip()) == (2, f"kappaflow {name}: error: {flag.split('=')[0]} is not an option of {name} "
                                        f"but of {owner}; kappaflow {name} --help lists its options")


def test_the_launcher_refuses_another_pipelines_flag_too(tmp_path):
    (tmp_path / "changes.jsonl").write_text("")
    with pytest.raises(ConfigurationError, match="^--reference_db is not an option of cdc but of clickstream"):
        launcher.run("cdc", cdc.build, [f"--input={tmp_path}/changes.jsonl", "--primary_keys=t:id",
                                        f"--output=sqlite:///{tmp_path}/out.db", "--reference_db=sqlite:///r.db"],
                     options_class=cdc.CdcOptions)


@pytest.mark.slow
def test_python_m_refuses_another_pipelines_flag_in_one_line(tmp_path):
    """At the command line, where Beam has seen only this pipeline's flags (`python -m pipelines.cdc`)."""
    (tmp_path / "changes.jsonl").write_text("")
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-m", "pipelines.cdc", f"--input={tmp_path}/changes.jsonl",
         "--primary_keys=t:id", "--max_clock_skew_seconds=5"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "kappaflow cdc: error: --max_clock_skew_seconds is not an option of cdc but of iot_sensors; "
        "kappaflow cdc --help lists its options")


def test_each_pipeline_declares_its_own_option_groups():
    from kappaflow.options import EnrichmentOptions, PubSubInputOptions, WindowOptions

    assert not any(issubclass(cdc.CdcOptions, g) for g in (EnrichmentOptions, WindowOptions, PubSubInputOptions))
    assert all(issubclass(clickstream.ClickstreamOptions, g)
               for g in (EnrichmentOptions, WindowOptions, PubSubInputOptions))
    assert "alerts_topic" not in {a.dest for a in registered_actions(clickstream.ClickstreamOptions)}  # an IoT flag


def _installed_kappaflow() -> str:
    """The `kappaflow` console script that `pip install` put next to this interpreter."""
    import shutil
    import sys

    script = os.path.join(os.path.dirname(sys.executable), "kappaflow")
    found = script if os.path.exists(script) else shutil.which("kappaflow")
    assert found, f"no kappaflow console script next to {sys.executable} nor on PATH: is the package installed?"
    return found


def test_the_installed_kappaflow_command_helps_and_runs(sample, tmp_path):
    """The console script as installed (its generated launcher, not kappaflow.cli imported here):
    `--help` lists the pipeline's options and a small run writes its table and balances."""
    import subprocess

    script = _installed_kappaflow()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root}  # this checkout's code, whatever the install points at
    shown = subprocess.run([script, "clickstream", "--help"], capture_output=True, text=True, timeout=120, env=env,
                           stdin=subprocess.DEVNULL)
    assert shown.returncode == 0, shown.stderr
    assert "--window_seconds" in shown.stdout and "--reference_db" in shown.stdout

    output = tmp_path / "out.db"
    ran = subprocess.run([script, "clickstream", f"--input={sample}/events.jsonl",
                          f"--reference_db=sqlite:///{sample}/ref.db", f"--output=sqlite:///{output}",
                          "--progress=off"],
                         capture_output=True, text=True, timeout=300, env=env, stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "[clickstream] batch on " in ran.stdout and "accounting balanced" in ran.stdout
    with sqlite3.connect(output) as db:
        (rows,), = db.execute("SELECT COUNT(*) FROM clickstream_metrics")
    assert rows > 0
