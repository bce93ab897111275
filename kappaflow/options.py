"""Command-line options shared by every pipeline (Beam's own options come on top)."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from typing import Callable, Optional

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from io_connectors.replay import ReplayConfig
from kappaflow.core import metrics
from transforms.dedup import DedupConfig
from transforms.event_time import DEFAULT_MAX_FUTURE_SECONDS, EventTimeBounds
from transforms.parse import DEFAULT_MAX_RECORD_BYTES
from transforms.windowing import WindowConfig

__all__ = ["KappaflowOptions", "EnrichmentOptions", "WindowOptions", "PubSubInputOptions", "OPTION_GROUPS",
           "KafkaOptions"]

DEFAULT_OUTPUT = "sqlite:///kappaflow.db"
# Public (it is in this file): hashes salted with it can be reversed by anyone with a dictionary.
DEFAULT_PII_SALT = "kappaflow-default-salt"
# Runners whose workers are this machine: the built-in salt is fine for trying things out there.
_LOCAL_RUNNERS = {None, "", "DirectRunner", "direct", "BundleBasedDirectRunner", "SwitchingDirectRunner",
                  "PrismRunner", "prism"}
_LOG = logging.getLogger(__name__)
_warned_default_salt = False


def _is_local_runner(runner: object) -> bool:
    return (runner if isinstance(runner, str) or runner is None else type(runner).__name__) in _LOCAL_RUNNERS


def _warn_default_salt_once() -> None:
    global _warned_default_salt
    if not _warned_default_salt:
        _warned_default_salt = True
        _LOG.warning("the PII hashes use kappaflow's built-in salt, which is public: set --pii_salt or "
                     "$KAPPAFLOW_PII_SALT to a secret of your own for this non-local run")




@dataclasses.dataclass(frozen=True)
class Rule:
    """What a numeric option accepts, declared once: the command line checks `accepts` (exit 2 with
    `text`), the flex template's parameter gets `regex`, and tests/test_options.py proves they agree.
    The config objects built from the option (WindowConfig, DedupConfig, ...) check the same bound."""

    accepts: Callable[[float], bool]
    text: str
    regex: str


_DECIMAL = r"[0-9]+(\.[0-9]+)?"
AT_LEAST_ZERO = Rule(lambda v: 0 <= v < math.inf, "must be >= 0 seconds", rf"^{_DECIMAL}$")
POSITIVE = Rule(lambda v: 0 < v < math.inf, "must be > 0 seconds",
                r"^([0-9]*[1-9][0-9]*(\.[0-9]+)?|[0-9]+\.[0-9]*[1-9][0-9]*)$")
WHOLE_AT_LEAST_ZERO = Rule(lambda v: v >= 0 and float(v).is_integer(), "must be a whole number of seconds >= 0",
                           r"^[0-9]+(\.0+)?$")
WHOLE_POSITIVE = Rule(lambda v: v >= 1 and float(v).is_integer(), "must be a whole number >= 1", r"^0*[1-9][0-9]*$")
SHARE = Rule(lambda v: 0 <= v <= 1, "must be a share between 0 and 1, e.g. 0.05", r"^(0(\.[0-9]+)?|1(\.0+)?)$")


def option_rules(cls: type) -> dict[str, Rule]:
    """The rules `cls` and its bases declare (their RULES), by option."""
    merged: dict[str, Rule] = {}
    for klass in reversed(cls.mro()):
        merged.update(vars(klass).get("RULES", {}))
    return merged
# Where rows can go: an SQLAlchemy URL, a BigQuery dataset, or a directory (local, file://, gs://).
_SINK_URL = r"^([a-z][a-z0-9+]*://.+|bigquery:[A-Za-z0-9_.:-]+|/.+)$"


class KappaflowOptions(PipelineOptions):
    """The options every pipeline has. A pipeline's own options class adds the groups it uses
    (EnrichmentOptions, WindowOptions, PubSubInputOptions, its own flags): the command line refuses
    a flag the pipeline does not declare, and its --help and template metadata list exactly those."""

    # Where a record read can end in this pipeline (names of kappaflow/core/metrics.OUTCOMES): the
    # launcher's accounting balances exactly these. Each pipeline's options class declares its own.
    OUTCOMES: tuple[str, ...] = tuple(metrics.OUTCOMES)

    # Validation of each option as a flex-template parameter (kappaflow/flex_template.py); options
    # not listed get one from their argparse type.
    TEMPLATE_REGEXES: dict[str, str] = {
        "input": r"^(gs://|/|file://|bigquery:).+$",
        "output": _SINK_URL,
        "dead_letter_output": _SINK_URL,
        "reference_db": r"^[a-z][a-z0-9+]*://.+$",
        "input_subscription": r"^projects/[^/]+/subscriptions/[^/]+$",
        "alerts_topic": r"^projects/[^/]+/topics/[^/]+$",
        "bigquery_method": r"^(AUTO|FILE_LOADS|STREAMING_INSERTS|STORAGE_WRITE_API)$",
        "progress": r"^(auto|bar|plain|off)$",
    }
    RULES = {
        "max_out_of_orderness_seconds": AT_LEAST_ZERO,
        "replay_chunk_size": dataclasses.replace(WHOLE_POSITIVE, text="must be >= 1 record"),
        "replay_speed": dataclasses.replace(POSITIVE, text="must be > 0 (times real time)"),
        "bigquery_firing_seconds": dataclasses.replace(WHOLE_POSITIVE, text="must be a whole number of seconds >= 1"),
        "max_invalid_ratio": SHARE,
        "progress_seconds": POSITIVE,
        "max_record_bytes": dataclasses.replace(WHOLE_POSITIVE, text="must be >= 1 byte"),
        "max_future_seconds": AT_LEAST_ZERO,
    }

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        # Not `required=True`: Beam parses every registered options class, in every pipeline of the
        # process; the launcher checks it instead.
        parser.add_argument("--input", default=None,
                            help="Input files: glob(s), comma-separated; .jsonl/.csv/.avro/.parquet (+.gz); or a "
                                 "BigQuery table, bigquery:PROJECT.DATASET.TABLE (batch).")
        parser.add_argument("--output", default=DEFAULT_OUTPUT,
                            help="Output: an SQLAlchemy URL (rows are upserted), bigquery:PROJECT.DATASET, or a "
                                 "directory (file://DIR?format=jsonl|parquet|avro).")
        parser.add_argument("--dead_letter_output", default=None,
                            help="Where dead letters go (same URL forms); default: --output.")
        parser.add_argument("--max_out_of_orderness_seconds", type=float, default=60.0,
                            help="Streaming replay: the watermark trails the largest event time by this much.")
        parser.add_argument("--replay_chunk_size", type=int, default=2000,
                            help="Streaming replay: records between watermark advances (checkpoints).")
        parser.add_argument("--replay_speed", type=float, default=None,
                            help="Streaming replay: replay event time at N x real time (a paced load test); "
                                 "default: as fast as possible.")
        parser.add_argument("--bigquery_endpoint", default=os.environ.get("BIGQUERY_EMULATOR_HOST"),
                            help="BigQuery API endpoint override (host:port or URL) for local development; "
                                 "default: $BIGQUERY_EMULATOR_HOST. No Google credentials are needed with it.")
        parser.add_argument("--bigquery_method", default="AUTO",
                            choices=("AUTO", "FILE_LOADS", "STREAMING_INSERTS", "STORAGE_WRITE_API"),
                            help="BigQuery output: AUTO = load jobs in batch, streaming inserts when streaming; "
                                 "STORAGE_WRITE_API needs Beam's Java expansion service.")
        parser.add_argument("--max_record_bytes", type=int, default=DEFAULT_MAX_RECORD_BYTES,
                            help="Records larger than this are dead letters before parsing (default 1 MiB, "
                                 "Kafka's default message limit).")
        parser.add_argument("--max_future_seconds", type=float, default=DEFAULT_MAX_FUTURE_SECONDS,
                            help="Event times further ahead of the wall clock are dead letters (default a day).")
        parser.add_argument("--bigquery_firing_seconds", type=int, default=60,
                            help="Streaming with BigQuery load jobs or CDC merges: one load (and MERGE) per table "
                                 "every N seconds of processing time. Batch: one per table per run.")
        parser.add_argument("--report", default=None,
                            help="Write a run report here: .html (a page with charts, opens without a server) "
                                 "or .json (the accounting).")
        parser.add_argument("--max_invalid_ratio", type=float, default=None,
                            help="Fail the run (exit 1) when more than this share of the records read (0-1) "
                                 "ends in the dead letters; default: off.")
        parser.add_argument("--progress", default="auto", choices=("auto", "bar", "plain", "off"),
                            help="Progress while the run works: a live line on a terminal (bar), a plain "
                                 "line every --progress_seconds (plain, the auto choice for logs), or off.")
        parser.add_argument("--progress_seconds", type=float, default=10.0,
                            help="Seconds between two plain progress lines.")
        parser.add_argument("--pii_salt", default=None,
                            help="Salt of the PII hashes; default: $KAPPAFLOW_PII_SALT, else a built-in salt. "
                                 "Set your own in production.")

    def event_time_bounds(self) -> EventTimeBounds:
        return EventTimeBounds(self.max_future_seconds)

    def replay_config(self) -> ReplayConfig:
        return ReplayConfig(self.max_out_of_orderness_seconds, self.replay_chunk_size, self.replay_speed)

    @property
    def hash_salt(self) -> str:
        salt = self.pii_salt or os.environ.get("KAPPAFLOW_PII_SALT")
        if salt:
            return salt
        if not _is_local_runner(self.view_as(StandardOptions).runner):
            _warn_default_salt_once()
        return DEFAULT_PII_SALT

    @property
    def dead_letters_url(self) -> str:
        return self.dead_letter_output or self.output


# The option groups below are direct PipelineOptions subclasses: Beam registers only those, so its
# own parser knows their flags (otherwise it warns "Unparseable argument" on every run).
class EnrichmentOptions(PipelineOptions):
    """Pipelines that look records up in a reference database."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument("--reference_db", default=None,
                            help="SQLAlchemy URL of the reference database used for enrichment.")


class WindowOptions(PipelineOptions):
    """Pipelines that aggregate per event-time window (and drop duplicates by id before)."""

    # Per-pipeline defaults live on the class, not in argparse: Beam parses every registered options
    # class into one parser per process, so a subclass's `set_defaults` would leak into the others.
    DEFAULT_WINDOW_SECONDS = 60.0
    DEFAULT_ALLOWED_LATENESS_SECONDS = 900.0
    RULES = {
        "window_seconds": POSITIVE,
        "allowed_lateness_seconds": AT_LEAST_ZERO,
        "early_firing_seconds": WHOLE_AT_LEAST_ZERO,
        "dedup_horizon_seconds": POSITIVE,
    }

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument("--window_seconds", type=float, default=None,
                            help="Window size in seconds; the default depends on the pipeline.")
        parser.add_argument("--allowed_lateness_seconds", type=float, default=None,
                            help="How late a record may be and still update its window; later ones are dead "
                                 "letters. The default depends on the pipeline.")
        parser.add_argument("--early_firing_seconds", type=float, default=30.0,
                            help="Early panes every N seconds of processing time (streaming only); 0: none.")
        parser.add_argument("--dedup_horizon_seconds", type=float, default=3600.0,
                            help="Copies of an id whose event times fall in the same bucket of this many seconds "
                                 "(aligned to the epoch) are duplicates.")

    def window_config(self) -> WindowConfig:
        cls = type(self)
        # Processing time does not pass in a batch run: there are no early panes to fire (and the
        # FnApiRunner has no clock for processing-time triggers). Decided here, so a dry run builds
        # the graph the run builds.
        streaming = bool(self.view_as(StandardOptions).streaming)
        return WindowConfig(
            size_seconds=cls.DEFAULT_WINDOW_SECONDS if self.window_seconds is None else self.window_seconds,
            allowed_lateness_seconds=(cls.DEFAULT_ALLOWED_LATENESS_SECONDS if self.allowed_lateness_seconds is None
                                      else self.allowed_lateness_seconds),
            early_firing_seconds=(self.early_firing_seconds or None) if streaming else None,
        )

    def dedup_config(self, windows: Optional[WindowConfig] = None) -> DedupConfig:
        """Buckets stay open as long as the windows after them can still take a record."""
        lateness = self.dedup_horizon_seconds if windows is None else (
            windows.size_seconds + windows.state_retention_seconds)
        return DedupConfig(self.dedup_horizon_seconds, lateness)


class PubSubInputOptions(PipelineOptions):
    """Pipelines that can read a Pub/Sub subscription instead of --input."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument("--input_subscription", default=None,
                            help="Read from Pub/Sub instead of --input: projects/P/subscriptions/S (with --streaming).")
        parser.add_argument("--timestamp_attribute", default=None,
                            help="Pub/Sub: event time from this message attribute (RFC 3339 or epoch ms) "
                                 "instead of the payload.")
        parser.add_argument("--pubsub_id_label", default=None,
                            help="Pub/Sub: attribute with a unique message id for the runner's native dedup "
                                 "(Dataflow; the DirectRunner does not support it).")



# The groups a pipeline's options class may add to KappaflowOptions (the CLI refuses the flags of
# the groups a pipeline does not add).
OPTION_GROUPS: tuple[type[PipelineOptions], ...] = (EnrichmentOptions, WindowOptions, PubSubInputOptions)


class KafkaOptions(PipelineOptions):
    """Kafka's options. Not part of KappaflowOptions: Dataflow flex templates (generated from those)
    cannot run kappaflow's Kafka read, which needs Java workers in the EXTERNAL environment."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument("--kafka_consumer_group", default=None,
                            help="Kafka (--input=kafka://HOST:PORT/TOPIC[,TOPIC]): consumer group id; offsets are "
                                 "committed when the runner finalizes a checkpoint, and a new job resumes after them.")
        parser.add_argument("--kafka_config", default=None,
                            help="Kafka: consumer settings KEY=VALUE,... (security.protocol, sasl.*, ssl.*, "
                                 "auto.offset.reset (default earliest), ...).")
        parser.add_argument("--kafka_max_records", type=int, default=None,
                            help="Kafka, for tests and demos: stop reading after this many records (the job ends).")
        parser.add_argument("--kafka_max_read_seconds", type=int, default=None,
                            help="Kafka, for tests and demos: stop reading after this many seconds (the job ends).")
        parser.add_argument("--java_worker_pool", default=None,
                            help="Java transforms (Kafka): HOST:PORT of a running Beam Java worker pool "
                                 "(ExternalWorkerService), e.g. next to each TaskManager of a Flink cluster; "
                                 "default: one started on this machine for the run.")
