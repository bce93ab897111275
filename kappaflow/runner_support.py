"""What each runner can run, checked before a job starts.

Beam does not check this up front: an unsupported source fails inside the runner, minutes later, as
a stack trace (Beam's Python Pub/Sub read on Flink: apache/beam#27443). The launcher calls
`check_runner_support` with the run's options before building the graph; an unsupported
combination stops with one line naming what to use instead.

    python -m kappaflow.runner_support     # prints the table
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from kappaflow.errors import ConfigurationError

__all__ = ["FEATURES", "JAVA_PUBSUB_RUNNERS", "RUNNERS", "UnsupportedOnRunner", "check_runner_support",
           "reads_pubsub_through_java", "runner_name", "table"]

RUNNERS = ("DirectRunner", "PrismRunner", "FlinkRunner", "DataflowRunner")
# Runners without Beam's Python Pub/Sub read (apache/beam#27443): kappaflow reads Pub/Sub there
# through Beam's Java PubsubIO (io_connectors/pubsub.py), chosen once per run in kappaflow/wiring.py.
JAVA_PUBSUB_RUNNERS = frozenset({"PrismRunner", "FlinkRunner"})
_ALIASES = {"direct": "DirectRunner", "prism": "PrismRunner", "flink": "FlinkRunner", "dataflow": "DataflowRunner",
            "BundleBasedDirectRunner": "DirectRunner", "SwitchingDirectRunner": "DirectRunner"}


class UnsupportedOnRunner(ConfigurationError, ValueError):
    """The options ask for something the runner cannot run; the message names the alternative.
    A configuration error: the command prints it as one line and exits 2, before asking any server."""


@dataclasses.dataclass(frozen=True)
class Feature:
    name: str
    used: Callable[[object], bool]  # KappaflowOptions → does this run use it?
    runners: frozenset[str]  # where it runs
    alternative: str  # what to do on the other runners
    note: str = ""


def _writes_storage_api(options: object) -> bool:
    return getattr(options, "bigquery_method", None) == "STORAGE_WRITE_API" and any(
        str(getattr(options, name, None) or "").startswith("bigquery:") for name in ("output", "dead_letter_output"))


def _streaming(options: object) -> bool:
    return bool(options.view_as(StandardOptions).streaming)


FEATURES = (
    Feature("Pub/Sub read (--input_subscription)", lambda o: bool(getattr(o, "input_subscription", None)),
            frozenset(RUNNERS), "",
            "Beam's Python read on the DirectRunner (streaming) and Dataflow; on Prism and Flink, which lack "
            "it (apache/beam#27443), Beam's Java PubsubIO through kappaflow's expansion service and EXTERNAL "
            "Java workers. PUBSUB_EMULATOR_HOST points either read at an emulator"),
    Feature("Pub/Sub id attribute (--pubsub_id_label)", lambda o: bool(getattr(o, "pubsub_id_label", None)),
            frozenset({"DataflowRunner"}),
            "drop --pubsub_id_label: the pipelines' own dedup (by event id) removes re-deliveries on every runner "
            "(Pub/Sub's dedup by id attribute runs on Dataflow only)"),
    Feature("Java transforms: Kafka (--input, --alerts_topic=kafka://...)",
            lambda o: any(str(getattr(o, name, None) or "").startswith("kafka://")
                          for name in ("input", "alerts_topic")),
            frozenset({"PrismRunner", "FlinkRunner"}),
            "run it with --runner=PrismRunner (this machine) or --runner=FlinkRunner (embedded or a cluster)",
            "Beam's Java KafkaIO through kappaflow's expansion service, Java workers in the EXTERNAL "
            "environment (no Docker); the Python DirectRunner cannot run a Java transform"),
    Feature("Java transforms: BigQuery Storage Write API (--bigquery_method=STORAGE_WRITE_API)", _writes_storage_api,
            frozenset({"PrismRunner", "FlinkRunner"}),
            "run it with --runner=PrismRunner or --runner=FlinkRunner, or use --bigquery_method=FILE_LOADS "
            "(batch) or STREAMING_INSERTS",
            "Beam's Java BigQueryIO through kappaflow's expansion service and EXTERNAL Java workers; on "
            "Dataflow those workers would need Beam's Java container, which kappaflow does not wire"),
    Feature("BigQuery Storage Write API in streaming (exactly-once)",
            lambda o: _writes_storage_api(o) and _streaming(o),
            frozenset({"FlinkRunner"}),
            "Prism 2.70 cannot build its exactly-once streams (no beam:coder:sharded_key:v1): run it with "
            "--runner=FlinkRunner, or use --bigquery_method=STREAMING_INSERTS",
            "BUFFERED write streams flushed every --bigquery_firing_seconds, on Flink with a live source"),
    Feature("BigQuery Storage Write API in a streaming replay of files",
            lambda o: _writes_storage_api(o) and _streaming(o) and not getattr(o, "input_subscription", None)
            and not str(getattr(o, "input", None) or "").startswith("kafka://"),
            frozenset(),
            "a replay ends, and Beam 2.70's Flink runner never finishes a streaming Storage Write whose input "
            "has ended (it waits for the buffered rows' processing-time timer, which it no longer fires; the "
            "last rows are never written); replay with --bigquery_method=STREAMING_INSERTS, or stream from "
            "Kafka or Pub/Sub"),
)


def runner_name(options: PipelineOptions) -> str:
    name = options.view_as(StandardOptions).runner or "DirectRunner"
    return _ALIASES.get(name, name)


def reads_pubsub_through_java(options: PipelineOptions) -> bool:
    """Does this run read Pub/Sub through Beam's Java PubsubIO (rather than its Python read)?"""
    return runner_name(options) in JAVA_PUBSUB_RUNNERS


def check_runner_support(options: PipelineOptions, own: object) -> None:
    """Raise UnsupportedOnRunner for the first feature the run uses that its runner lacks."""
    runner = runner_name(options)
    if runner not in RUNNERS:
        return  # a runner we have no table for: Beam decides
    for feature in FEATURES:
        if feature.used(own) and runner not in feature.runners:
            raise UnsupportedOnRunner(f"{feature.name} is not supported on {runner}: {feature.alternative}")


def table() -> str:
    """The table as text: one row per feature, one column per runner."""
    first = max(len(f.name) for f in FEATURES)
    lines = [" | ".join([f"{'':<{first}}", *RUNNERS])]
    for feature in FEATURES:
        cells = [("yes" if r in feature.runners else "no").center(len(r)) for r in RUNNERS]
        lines.append(" | ".join([f"{feature.name:<{first}}", *cells]))
    lines.append("")
    lines.extend(f"{f.name}: {f.note or f.alternative}" for f in FEATURES)
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
