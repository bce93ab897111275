"""Dataflow packaging, proven offline: metadata, image definition, Cloud Build, and the job graph
a DataflowRunner dry run would submit."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import apache_beam as beam
import pytest
import yaml
from apache_beam.options.pipeline_options import PipelineOptions

from kappaflow import flex_template
from kappaflow.launcher import normalize_boolean_flags
from conftest import registered_actions

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A documented, valid example for every parameter any pipeline declares, and values its regex rejects.
EXAMPLES = {
    "input": ("gs://acme-raw/clickstream/2026-01-*.jsonl.gz", ["acme-raw/x.jsonl", ""]),
    "output": ("bigquery:acme-analytics.kappaflow", ["warehouse", "bigquery:"]),
    "dead_letter_output": ("postgresql://etl@10.1.2.3/warehouse", ["dead letters"]),
    "reference_db": ("postgresql+psycopg2://etl@10.1.2.3/reference", ["reference.db"]),
    "window_seconds": ("60", ["-1", "1m", "ten"]),
    "allowed_lateness_seconds": ("900", ["15min"]),
    "early_firing_seconds": ("30", ["0.5", "soon"]),
    "dedup_horizon_seconds": ("3600", ["1h"]),
    "max_out_of_orderness_seconds": ("60.5", ["x"]),
    "replay_chunk_size": ("500", ["0", "-5"]),
    "replay_speed": ("60", ["fast", "-1"]),
    "report": ("/tmp/run.json", []),
    "pii_salt": ("s3cr3t-salt", []),
    "streaming": ("true", ["yes", "1"]),
    "max_clock_skew_seconds": ("300", ["5m"]),
    "ingest_time_field": ("ingest_time", []),
    "default_max_temp_c": ("90", ["hot"]),
    "archive": ("gs://acme-lake/iot", ["lake"]),
    "archive_window_seconds": ("3600", ["1h"]),
    "primary_keys": ("customers:customer_id,orders:store_id+order_id",
                     ["customers", "customers:id,", "cust-omers:id", "orders:store_id+"]),
    "apply_batch_size": ("500", ["0", "-1", "many"]),
    "input_subscription": ("projects/acme/subscriptions/clicks", ["clicks", "projects/acme/topics/clicks"]),
    "timestamp_attribute": ("event_time", []),
    "pubsub_id_label": ("event_id", []),
    "alerts_topic": ("projects/acme/topics/alerts", ["alerts", "projects/acme/subscriptions/alerts"]),
    "bigquery_endpoint": ("127.0.0.1:9050", []),
    "bigquery_method": ("FILE_LOADS", ["file_loads", "FAST"]),
    "bigquery_firing_seconds": ("60", ["0", "0.5", "1m"]),
    "max_invalid_ratio": ("0.05", ["5%", "1.5", "-0.1"]),
    "progress": ("plain", ["bars", "PLAIN"]),
    "progress_seconds": ("10", ["10s"]),
    "report_every_seconds": ("60", ["1m", "-5"]),
    "max_record_bytes": ("1048576", ["0", "1MiB"]),
    "max_future_seconds": ("86400", ["1d", "-5"]),
    "valid_ranges": ("temperature=-40..125,humidity=0..100", ["temperature", "temperature=-40", "hot=1..x"]),
}


def _metadata(name: str) -> dict:
    with open(flex_template.metadata_path(name), encoding="utf-8") as handle:
        return json.load(handle)


def test_metadata_files_match_the_option_parsers():
    assert flex_template.main(["--check"]) == 0


@pytest.mark.parametrize("name", flex_template.pipeline_names())
def test_every_metadata_parameter_is_accepted_by_the_pipeline(name):
    cls = flex_template.options_class(name)
    parameters = _metadata(name)["parameters"]
    argv = []
    for parameter in parameters:
        example, rejected = EXAMPLES[parameter["name"]]  # KeyError: document an example for it
        for regex in parameter.get("regexes", []):
            assert re.fullmatch(regex, example), (parameter["name"], example)
            for bad in rejected:
                assert not re.fullmatch(regex, bad), (parameter["name"], bad)
        argv.append(f"--{parameter['name']}={example}")
    # What the flex-template launcher passes is what the pipeline's launcher parses.
    options = PipelineOptions(normalize_boolean_flags(argv)).view_as(cls)
    for parameter in parameters:
        if parameter["name"] == "streaming":
            continue
        value = getattr(options, parameter["name"])
        assert str(value) == EXAMPLES[parameter["name"]][0] or value == float(EXAMPLES[parameter["name"]][0])


@pytest.mark.parametrize("name", flex_template.pipeline_names())
def test_every_pipeline_option_is_in_the_metadata(name):
    declared = {p["name"] for p in _metadata(name)["parameters"]}
    actions = registered_actions(flex_template.options_class(name))
    assert {a.dest for a in actions} <= declared


def _dockerfile() -> str:
    with open(os.path.join(ROOT, "templates", "Dockerfile"), encoding="utf-8") as handle:
        return handle.read()


def test_dockerfile_copies_files_that_exist_and_matches_the_pins():
    text = _dockerfile()
    for line in text.splitlines():
        if line.startswith("COPY") and "--from" not in line:
            sources = line.split()[1:-1]
            for source in sources:
                assert os.path.exists(os.path.join(ROOT, source)), source
    with open(os.path.join(ROOT, "requirements.txt"), encoding="utf-8") as handle:
        beam_pin = re.search(r"apache-beam\[gcp\]==([\d.]+)", handle.read()).group(1)
    assert f"ARG BEAM_VERSION={beam_pin}" in text
    assert "ARG PYTHON_VERSION=3.11" in text
    assert 'ENTRYPOINT ["/opt/apache/beam/boot"]' in text
    for name in flex_template.pipeline_names():
        assert os.path.exists(os.path.join(ROOT, "pipelines", f"{name}.py"))  # FLEX_TEMPLATE_PYTHON_PY_FILE


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or os.path.join(os.path.dirname(os.sys.executable), "hadolint")
    assert os.path.exists(hadolint), "hadolint is a test dependency (requirements-test.txt)"
    proc = subprocess.run([hadolint, os.path.join(ROOT, "templates", "Dockerfile")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cloudbuild_uses_existing_scripts_and_declared_substitutions():
    with open(os.path.join(ROOT, "cloudbuild.yaml"), encoding="utf-8") as handle:
        text = handle.read()
    config = yaml.safe_load(text)
    builtin = {"PROJECT_ID", "SHORT_SHA", "COMMIT_SHA", "BUILD_ID", "REPO_NAME", "BRANCH_NAME", "TAG_NAME"}
    used = set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)\}?", text))
    assert used <= builtin | set(config["substitutions"]), used - builtin - set(config["substitutions"])
    assert [s["id"] for s in config["steps"]] == ["test", "build-image", "push-image", "build-templates"]
    for step in config["steps"]:
        for arg in step.get("args", []):
            for script in re.findall(r"(?:scripts/[\w.-]+|\.ci/run|templates/Dockerfile)", arg):
                assert os.path.exists(os.path.join(ROOT, script)), script
    assert any("${SHORT_SHA}" in image for image in config["images"])


def _dry_run_graph(argv: list[str]):
    from pipelines import clickstream

    options = PipelineOptions([
        "--runner=DataflowRunner", "--dry_run=True", "--no_auth", "--project=acme-analytics-prod",
        "--region=europe-west1", "--temp_location=gs://acme-dataflow-tmp/tmp", *argv,
    ])
    p = beam.Pipeline(options=options)
    clickstream.build(p, options.view_as(clickstream.ClickstreamOptions))
    return p.run().job.proto_pipeline


@pytest.mark.slow
def test_dataflow_dry_run_batch_backfill_graph_is_stable():
    argv = ["--input=gs://acme-raw/clickstream/*.jsonl.gz", "--allowed_lateness_seconds=600",
            "--output=postgresql://etl@10.1.2.3/warehouse", "--reference_db=postgresql://etl@10.1.2.3/ref"]
    first, second = _dry_run_graph(argv), _dry_run_graph(argv)
    names = sorted(t.unique_name for t in first.components.transforms.values())
    assert names == sorted(t.unique_name for t in second.components.transforms.values())
    # No label of ours is generated from code (Beam's own composites name their insides stably).
    ours = {f for d in ("pipelines", "transforms", "io_connectors", "kappaflow")
            for f in os.listdir(os.path.join(ROOT, d)) if f.endswith(".py")}
    assert not [n for n in names for f in ours if f"{f}:" in n]
    assert {"ReadInput", "ParseEvents", "DedupByEventId", "Enrich", "RouteTooLate", "AggregatePerWindow",
            "WriteMetrics", "WriteDeadLetters"} <= {n.split("/")[0] for n in names}
    # The GroupByKey keeps window state for the allowed lateness plus the default margin (600 + 600 s).
    lateness = {w.allowed_lateness for w in first.components.windowing_strategies.values()}
    assert 1_200_000 in lateness


@pytest.mark.slow
def test_dataflow_dry_run_streaming_graph_reads_pubsub_natively_and_writes_bigquery():
    from apache_beam.portability.api import beam_runner_api_pb2

    subscription = "projects/acme-analytics-prod/subscriptions/clickstream"
    argv = ["--streaming", f"--input_subscription={subscription}", "--timestamp_attribute=event_time",
            "--pubsub_id_label=event_id", "--output=bigquery:acme-analytics-prod.kappaflow",
            "--reference_db=postgresql://etl@10.1.2.3/ref"]
    first, second = _dry_run_graph(argv), _dry_run_graph(argv)
    assert sorted(t.unique_name for t in first.components.transforms.values()) == sorted(
        t.unique_name for t in second.components.transforms.values())
    reads = [t for t in first.components.transforms.values() if t.spec.urn == "beam:transform:pubsub_read:v1"]
    assert len(reads) == 1
    payload = beam_runner_api_pb2.PubSubReadPayload.FromString(reads[0].spec.payload)
    # Dataflow dedups on the id attribute and takes event time from the attribute, natively.
    assert (payload.subscription, payload.timestamp_attribute, payload.id_attribute) == (
        subscription, "event_time", "event_id")
    names = {t.unique_name for t in first.components.transforms.values()}
    assert {"WriteMetrics/WriteToBigQueryTable", "WriteDeadLetters/Write/WriteToBigQueryTable"} <= names
    lateness = {w.allowed_lateness for w in first.components.windowing_strategies.values()}
    assert 1_800_000 in lateness  # 900 s allowed lateness + 900 s margin
