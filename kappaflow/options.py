"""Every option of the pipelines, declared once as data (Beam's own options come on top).

An options group is a direct PipelineOptions subclass with a table of `Option`s (OPTIONS). Beam's
parser (`_add_argparse_args`), `kappaflow NAME --help` (kappaflow/cli.py), the command line's value
checks and the flex-template parameters with their regexes (kappaflow/flex_template.py) all read
that table. A pipeline's options class (pipelines/) adds up the groups it takes, with its own
defaults and outcomes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from typing import Any, Callable, Optional

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from io_connectors.replay import ReplayConfig
from kappaflow.core import metrics
from transforms.dedup import DedupConfig
from transforms.event_time import DEFAULT_MAX_FUTURE_SECONDS, EventTimeBounds
from transforms.parse import DEFAULT_MAX_RECORD_BYTES
from transforms.windowing import WindowConfig

__all__ = ["Option", "Rule", "HELP_GROUPS", "declared_options", "default_of", "option_rules", "KappaflowOptions",
           "EnrichmentOptions", "WindowOptions", "PubSubInputOptions", "IotSensorsFlags", "CdcFlags",
           "OPTION_GROUPS", "KafkaOptions"]

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
    """What a numeric option accepts: the command line checks `accepts` (exit 2 with `text`), the
    flex template's parameter gets `regex`, and tests/test_options.py proves they agree. The config
    objects built from the option (WindowConfig, DedupConfig, ...) check the same bound."""

    accepts: Callable[[float], bool]
    text: str
    regex: str

    def saying(self, text: str) -> Rule:
        """The same bound, explained in the words of one option."""
        return dataclasses.replace(self, text=text)


_DECIMAL = r"[0-9]+(\.[0-9]+)?"
AT_LEAST_ZERO = Rule(lambda v: 0 <= v < math.inf, "must be >= 0 seconds", rf"^{_DECIMAL}$")
POSITIVE = Rule(lambda v: 0 < v < math.inf, "must be > 0 seconds",
                r"^([0-9]*[1-9][0-9]*(\.[0-9]+)?|[0-9]+\.[0-9]*[1-9][0-9]*)$")
WHOLE_AT_LEAST_ZERO = Rule(lambda v: v >= 0 and float(v).is_integer(), "must be a whole number of seconds >= 0",
                           r"^[0-9]+(\.0+)?$")
WHOLE_POSITIVE = Rule(lambda v: v >= 1 and float(v).is_integer(), "must be a whole number >= 1", r"^0*[1-9][0-9]*$")
SHARE = Rule(lambda v: 0 <= v <= 1, "must be a share between 0 and 1, e.g. 0.05", r"^(0(\.[0-9]+)?|1(\.0+)?)$")

# The groups of `kappaflow NAME --help`, in the order it shows them; every option names one.
HELP_GROUPS = ("input", "output", "windows and lateness", "dedup", "enrichment", "replay", "runner")
# A template parameter of a type without a rule or regex of its own.
_TYPE_REGEXES = {float: r"^-?[0-9]+(\.[0-9]+)?$", int: r"^-?[0-9]+$"}


@dataclasses.dataclass(frozen=True)
class Option:
    """One option, --NAME: what Beam's parser registers, and what --help, the value check and the
    flex-template parameter say and accept. `rule` bounds a number; `regex` is a text option's
    template regex (choices make their own); `default_env` names an environment variable whose
    value, when the parser is built, is the default."""

    name: str
    type: type
    default: Any
    rule: Optional[Rule] = None
    _: dataclasses.KW_ONLY
    group: str
    help: str
    regex: Optional[str] = None
    choices: Optional[tuple[str, ...]] = None
    unit: str = ""  # shown after the default in --help (an option named *_seconds is in "s")
    metavar: Optional[str] = None
    default_env: Optional[str] = None

    def __post_init__(self) -> None:
        if self.group not in HELP_GROUPS:
            raise ValueError(f"--{self.name}: group {self.group!r} is not one of {HELP_GROUPS}")
        if self.rule is not None and (self.regex or self.type not in (int, float)):
            raise ValueError(f"--{self.name}: a rule bounds a number, and its regex is the rule's")

    @property
    def flag(self) -> str:
        return f"--{self.name}"

    def current_default(self) -> Any:
        return os.environ.get(self.default_env, self.default) if self.default_env else self.default

    def template_regex(self) -> Optional[str]:
        if self.rule is not None:
            return self.rule.regex
        if self.choices:
            return f"^({'|'.join(map(re.escape, self.choices))})$"
        return self.regex or _TYPE_REGEXES.get(self.type)

    def add_to(self, parser) -> None:
        """Register with argparse. Never `required=True`: Beam parses every registered options class
        in every pipeline of the process; the launcher checks required options instead."""
        kwargs: dict[str, Any] = {"type": self.type} if self.type is not str else {}
        if self.choices:
            kwargs["choices"] = self.choices
        parser.add_argument(self.flag, default=self.current_default(), help=self.help, **kwargs)


def declared_options(cls: type) -> tuple[Option, ...]:
    """The options `cls` and its bases declare (their OPTIONS), bases first: the order of the
    template's parameters, and of --help within each of its groups."""
    return tuple(option for klass in reversed(cls.mro()) for option in vars(klass).get("OPTIONS", ()))


def default_of(cls: type, option: Option) -> Any:
    """The default of `option` in the pipeline whose options class is `cls`: the class's own
    (DEFAULT_WINDOW_SECONDS ...), else the option's. Not set in argparse: Beam parses every
    registered options class into one parser per process, so one pipeline's `set_defaults` would
    leak into the others."""
    return getattr(cls, f"DEFAULT_{option.name.upper()}", option.current_default())


def option_rules(cls: type) -> dict[str, Rule]:
    """The rules of the options of `cls`, by option."""
    return {option.name: option.rule for option in declared_options(cls) if option.rule is not None}


@classmethod
def add_option_table(cls, parser) -> None:
    """An options group's `_add_argparse_args` (Beam calls it on the class that defines it): its
    OPTIONS, as Beam's parser takes them."""
    for option in cls.OPTIONS:
        option.add_to(parser)


# Where rows can go: an SQLAlchemy URL, a BigQuery dataset, or a directory (local, file://, gs://).
_SINK_URL = r"^([a-z][a-z0-9+]*://.+|bigquery:[A-Za-z0-9_.:-]+|/.+)$"
_RANGE = r"[a-z_]+=-?[0-9.]+\.\.-?[0-9.]+"
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_TABLE_KEY = rf"{_IDENTIFIER}:{_IDENTIFIER}(\+{_IDENTIFIER})*"


# Every group below is a direct PipelineOptions subclass: Beam registers only those, so its own
# parser knows their flags (otherwise it warns "Unparseable argument" on every run).
class KappaflowOptions(PipelineOptions):
    """The options every pipeline has. A pipeline's own options class adds the groups it uses
    (EnrichmentOptions, WindowOptions, PubSubInputOptions, its own flags): the command line refuses
    a flag the pipeline does not declare, and its --help and template metadata list exactly those."""

    # Where a record read can end in this pipeline (names of kappaflow/core/metrics.OUTCOMES): the
    # launcher's accounting balances exactly these. Each pipeline's options class declares its own.
    OUTCOMES: tuple[str, ...] = tuple(metrics.OUTCOMES)

    # In the order of the groups of --help.
    OPTIONS = (
        Option("input", str, None, group="input", regex=r"^(gs://|/|file://|bigquery:).+$", metavar="FILES",
               help="Input files: glob(s), comma-separated; .jsonl/.csv/.avro/.parquet (+.gz); or a BigQuery table, "
                    "bigquery:PROJECT.DATASET.TABLE (batch); or Kafka topics, kafka://HOST:PORT[,HOST:PORT]/TOPIC[,TOPIC] "
                    "(live, on Prism or Flink)."),
        Option("max_record_bytes", int, DEFAULT_MAX_RECORD_BYTES, WHOLE_POSITIVE.saying("must be >= 1 byte"),
               group="input", unit="bytes",
               help="Records larger than this are dead letters before parsing (default 1 MiB, Kafka's default message "
                    "limit)."),
        Option("max_future_seconds", float, DEFAULT_MAX_FUTURE_SECONDS, AT_LEAST_ZERO, group="input",
               help="Event times further ahead of the wall clock are dead letters (default a day)."),
        Option("output", str, DEFAULT_OUTPUT, group="output", regex=_SINK_URL, metavar="URL",
               help="Output: an SQLAlchemy URL (rows are upserted), bigquery:PROJECT.DATASET, or a directory "
                    "(file://DIR?format=jsonl|parquet|avro)."),
        Option("dead_letter_output", str, None, group="output", regex=_SINK_URL, metavar="URL",
               help="Where dead letters go (same URL forms); default: --output."),
        Option("bigquery_endpoint", str, None,
               group="output", metavar="HOST:PORT", default_env="BIGQUERY_EMULATOR_HOST",
               help="BigQuery API endpoint override (host:port or URL) for local development; default: "
                    "$BIGQUERY_EMULATOR_HOST. No Google credentials are needed with it."),
        Option("bigquery_method", str, "AUTO",
               group="output", choices=("AUTO", "FILE_LOADS", "STREAMING_INSERTS", "STORAGE_WRITE_API"),
               help="BigQuery output: AUTO = load jobs in batch, streaming inserts when streaming; STORAGE_WRITE_API "
                    "needs Beam's Java expansion service."),
        Option("bigquery_firing_seconds", int, 60, WHOLE_POSITIVE.saying("must be a whole number of seconds >= 1"),
               group="output",
               help="Streaming with BigQuery load jobs or CDC merges: one load (and MERGE) per table every N seconds "
                    "of processing time. Batch: one per table per run."),
        Option("pii_salt", str, None, group="output", metavar="SECRET",
               help="Salt of the PII hashes; default: $KAPPAFLOW_PII_SALT, else a built-in salt. Set your own in "
                    "production."),
        Option("max_out_of_orderness_seconds", float, 60.0, AT_LEAST_ZERO, group="replay",
               help="Streaming replay: the watermark trails the largest event time by this much."),
        Option("replay_chunk_size", int, 2000, WHOLE_POSITIVE.saying("must be >= 1 record"),
               group="replay", unit="records",
               help="Streaming replay: records between watermark advances (checkpoints); a paced replay also "
                    "advances every --max_out_of_orderness_seconds of event time."),
        Option("replay_speed", float, None, POSITIVE.saying("must be > 0 (times real time)"), group="replay",
               help="Streaming replay: replay event time at N x real time (a paced load test); default: as fast as "
                    "possible."),
        Option("report", str, None, group="runner", metavar="PATH",
               help="Write a run report here: .html (a page with charts, opens without a server) or .json (the "
                    "accounting)."),
        Option("max_invalid_ratio", float, None, SHARE, group="runner", unit="of the records read",
               help="Fail the run (exit 1) when more than this share of the records read (0-1) ends in the dead "
                    "letters; default: off."),
        Option("progress", str, "auto", group="runner", choices=("auto", "bar", "plain", "off"),
               help="Progress while the run works: a live line on a terminal (bar), a plain line every "
                    "--progress_seconds (plain, the auto choice for logs), or off."),
        Option("progress_seconds", float, 10.0, POSITIVE, group="runner",
               help="Seconds between two plain progress lines."),
        Option("report_every_seconds", float, 60.0, AT_LEAST_ZERO.saying("must be >= 0 seconds (0: only at the end)"),
               group="runner",
               help="Streaming: print the accounting every N seconds while the job runs, and when it is cancelled "
                    "(records still in flight are shown); 0: only at the end."),
    )

    _add_argparse_args = add_option_table

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


class EnrichmentOptions(PipelineOptions):
    """Pipelines that look records up in a reference database."""

    OPTIONS = (
        Option("reference_db", str, None, group="enrichment", regex=r"^[a-z][a-z0-9+]*://.+$", metavar="URL",
               help="SQLAlchemy URL of the reference database used for enrichment."),
    )

    _add_argparse_args = add_option_table


class WindowOptions(PipelineOptions):
    """Pipelines that aggregate per event-time window (and drop duplicates by id before)."""

    # A pipeline's options class sets its own (default_of reads them).
    DEFAULT_WINDOW_SECONDS = 60.0
    DEFAULT_ALLOWED_LATENESS_SECONDS = 900.0
    OPTIONS = (
        Option("window_seconds", float, None, POSITIVE, group="windows and lateness",
               help="Window size in seconds; the default depends on the pipeline."),
        Option("allowed_lateness_seconds", float, None, AT_LEAST_ZERO, group="windows and lateness",
               help="How late a record may be and still update its window; later ones are dead letters. The default "
                    "depends on the pipeline."),
        Option("early_firing_seconds", float, 30.0, WHOLE_AT_LEAST_ZERO, group="windows and lateness",
               help="Early panes every N seconds of processing time (streaming only); 0: none."),
        Option("dedup_horizon_seconds", float, 3600.0, POSITIVE, group="dedup",
               help="Copies of an id whose event times fall in the same bucket of this many seconds (aligned to the "
                    "epoch) are duplicates."),
    )

    _add_argparse_args = add_option_table

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

    OPTIONS = (
        Option("input_subscription", str, None,
               group="input", regex=r"^projects/[^/]+/subscriptions/[^/]+$", metavar="SUBSCRIPTION",
               help="Read from Pub/Sub instead of --input: projects/P/subscriptions/S (with --streaming)."),
        Option("timestamp_attribute", str, None, group="input", metavar="ATTRIBUTE",
               help="Pub/Sub: event time from this message attribute (RFC 3339 or epoch ms) instead of the payload."),
        Option("pubsub_id_label", str, None, group="input", metavar="ATTRIBUTE",
               help="Pub/Sub: attribute with a unique message id for the runner's native dedup (Dataflow; the "
                    "DirectRunner does not support it)."),
    )

    _add_argparse_args = add_option_table


class IotSensorsFlags(PipelineOptions):
    """The IoT sensor pipeline's own options."""

    OPTIONS = (
        Option("max_clock_skew_seconds", float, 300.0, AT_LEAST_ZERO, group="windows and lateness",
               help="Use the ingest time when the device time is missing or further off."),
        Option("ingest_time_field", str, None, group="input", metavar="FIELD",
               help="Top-level field of file records holding the ingest time (file sources)."),
        Option("default_max_temp_c", float, 90.0, group="enrichment", unit="°C",
               help="Alert threshold of devices missing from the registry (or without one)."),
        Option("valid_ranges", str, None, group="input", regex=rf"^{_RANGE}(,{_RANGE})*$",
               help="Plausible value range per quantity in canonical units, overriding the defaults "
                    "temperature=-273.15..2000 (°C), pressure=0..1000000 (hPa), humidity=0..100 (percent); readings "
                    "outside are dead letters (stage range)."),
        Option("archive", str, None, group="output", regex=r"^(gs://|/|file://).+$", metavar="DIR",
               help="Directory of the raw archive (Parquet, by event_date and device_type)."),
        Option("archive_window_seconds", float, 3600.0, POSITIVE, group="output",
               help="Event time covered by one archive file."),
        Option("alerts_topic", str, None, group="output", regex=r"^projects/[^/]+/topics/[^/]+$", metavar="TOPIC",
               help="Topic for alerts: Pub/Sub, projects/P/topics/T; or Kafka, kafka://HOST:PORT/TOPIC (Prism, "
                    "Flink)."),
    )

    _add_argparse_args = add_option_table


class CdcFlags(PipelineOptions):
    """The CDC pipeline's own options."""

    OPTIONS = (
        Option("primary_keys", str, None,
               group="input", regex=rf"^{_TABLE_KEY}(,{_TABLE_KEY})*$", metavar="TABLE:COLUMN,...",
               help="Primary key per source table: customers:customer_id,orders:store_id+order_id (+ joins a "
                    "composite key). Events of other tables are dead letters."),
        Option("apply_batch_size", int, 500, WHOLE_POSITIVE.saying("must be >= 1 change"),
               group="output", unit="changes",
               help="Changes per transaction when applying to --output."),
    )

    _add_argparse_args = add_option_table


# The groups a pipeline's options class may add to KappaflowOptions (the CLI refuses the flags of
# the groups a pipeline does not add).
OPTION_GROUPS: tuple[type[PipelineOptions], ...] = (EnrichmentOptions, WindowOptions, PubSubInputOptions,
                                                    IotSensorsFlags, CdcFlags)


class KafkaOptions(PipelineOptions):
    """Kafka's options. Not part of KappaflowOptions: Dataflow flex templates (generated from those)
    cannot run kappaflow's Kafka read, which needs Java workers in the EXTERNAL environment."""

    OPTIONS = (
        Option("kafka_consumer_group", str, None, group="input",
               help="Kafka (--input=kafka://HOST:PORT[,HOST:PORT]/TOPIC[,TOPIC]): consumer group id; the consumer "
                    "commits the offsets it polled, and a new job in the group resumes after them."),
        Option("kafka_config", str, None, group="input",
               help="Kafka: consumer settings KEY=VALUE,... (security.protocol, sasl.*, ssl.*, auto.offset.reset "
                    "(default earliest), ...); the security.*, sasl.* and ssl.* ones also go to the producer of a "
                    "Kafka --alerts_topic."),
        Option("kafka_max_records", int, None, group="input",
               help="Kafka, for tests and demos: stop reading after this many records (the job ends)."),
        Option("kafka_max_read_seconds", int, None, group="input",
               help="Kafka, for tests and demos: stop reading after this many seconds (the job ends)."),
        Option("java_worker_pool", str, None, group="runner",
               help="Java transforms (Kafka): HOST:PORT of a running Beam Java worker pool (ExternalWorkerService), "
                    "e.g. next to each TaskManager of a Flink cluster; default: one started on this machine for the "
                    "run."),
    )

    _add_argparse_args = add_option_table
