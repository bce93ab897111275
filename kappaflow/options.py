"""Command-line options shared by every pipeline (Beam's own options come on top)."""

from __future__ import annotations

import os

from apache_beam.options.pipeline_options import PipelineOptions

from io_connectors.replay import ReplayConfig
from transforms.windowing import WindowConfig

__all__ = ["KappaflowOptions"]

DEFAULT_OUTPUT = "sqlite:///kappaflow.db"


_NUMBER = r"^[0-9]+(\.[0-9]+)?$"
_WHOLE = r"^[1-9][0-9]*$"
# Where rows can go: an SQLAlchemy URL, a BigQuery dataset, or a directory (local, file://, gs://).
_SINK_URL = r"^([a-z][a-z0-9+]*://.+|bigquery:[A-Za-z0-9_.:-]+|/.+)$"


class KappaflowOptions(PipelineOptions):
    # Per-pipeline defaults live on the class, not in argparse: Beam parses every registered options
    # class into one parser per process, so a subclass's `set_defaults` would leak into the others.
    DEFAULT_WINDOW_SECONDS = 60.0
    DEFAULT_ALLOWED_LATENESS_SECONDS = 900.0

    # Validation of each option as a flex-template parameter (kappaflow/flex_template.py); options
    # not listed get one from their argparse type.
    TEMPLATE_REGEXES: dict[str, str] = {
        "input": r"^(gs://|/|file://|bigquery:).+$",
        "output": _SINK_URL,
        "dead_letter_output": _SINK_URL,
        "reference_db": r"^[a-z][a-z0-9+]*://.+$",
        "window_seconds": _NUMBER,
        "allowed_lateness_seconds": _NUMBER,
        "early_firing_seconds": r"^[0-9]+$",
        "dedup_horizon_seconds": _NUMBER,
        "max_out_of_orderness_seconds": _NUMBER,
        "replay_chunk_size": _WHOLE,
        "input_subscription": r"^projects/[^/]+/subscriptions/[^/]+$",
        "alerts_topic": r"^projects/[^/]+/topics/[^/]+$",
        "bigquery_method": r"^(AUTO|FILE_LOADS|STREAMING_INSERTS|STORAGE_WRITE_API)$",
        "bigquery_firing_seconds": _WHOLE,
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
        parser.add_argument("--reference_db", default=None,
                            help="SQLAlchemy URL of the reference database used for enrichment.")
        parser.add_argument("--window_seconds", type=float, default=None,
                            help="Window size in seconds; the default depends on the pipeline.")
        parser.add_argument("--allowed_lateness_seconds", type=float, default=None,
                            help="How late a record may be and still update its window; later ones are dead "
                                 "letters. The default depends on the pipeline.")
        parser.add_argument("--early_firing_seconds", type=float, default=30.0,
                            help="Early panes every N seconds of processing time (streaming only); 0: none.")
        parser.add_argument("--dedup_horizon_seconds", type=float, default=3600.0,
                            help="How long (event time) after the last copy a duplicate is still recognised.")
        parser.add_argument("--max_out_of_orderness_seconds", type=float, default=60.0,
                            help="Streaming replay: the watermark trails the largest event time by this much.")
        parser.add_argument("--replay_chunk_size", type=int, default=2000,
                            help="Streaming replay: records between watermark advances.")
        parser.add_argument("--input_subscription", default=None,
                            help="Read from Pub/Sub instead of --input: projects/P/subscriptions/S (with --streaming).")
        parser.add_argument("--timestamp_attribute", default=None,
                            help="Pub/Sub: event time from this message attribute (RFC 3339 or epoch ms) "
                                 "instead of the payload.")
        parser.add_argument("--pubsub_id_label", default=None,
                            help="Pub/Sub: attribute with a unique message id for the runner's native dedup "
                                 "(Dataflow; the DirectRunner does not support it).")
        parser.add_argument("--alerts_topic", default=None,
                            help="Pub/Sub topic for alerts: projects/P/topics/T.")
        parser.add_argument("--bigquery_endpoint", default=os.environ.get("BIGQUERY_EMULATOR_HOST"),
                            help="BigQuery API endpoint override (host:port or URL) for local development; "
                                 "default: $BIGQUERY_EMULATOR_HOST. No Google credentials are needed with it.")
        parser.add_argument("--bigquery_method", default="AUTO",
                            choices=("AUTO", "FILE_LOADS", "STREAMING_INSERTS", "STORAGE_WRITE_API"),
                            help="BigQuery output: AUTO = load jobs in batch, streaming inserts when streaming; "
                                 "STORAGE_WRITE_API needs Beam's Java expansion service.")
        parser.add_argument("--bigquery_firing_seconds", type=int, default=60,
                            help="Streaming with BigQuery load jobs or CDC merges: one load (and MERGE) per table "
                                 "every N seconds of processing time. Batch: one per table per run.")
        parser.add_argument("--report", default=None, help="Write the run's accounting as JSON here.")
        parser.add_argument("--pii_salt", default=None,
                            help="Salt of the PII hashes; default: $KAPPAFLOW_PII_SALT, else a built-in salt. "
                                 "Set your own in production.")

    def window_config(self) -> WindowConfig:
        cls = type(self)
        return WindowConfig(
            size_seconds=cls.DEFAULT_WINDOW_SECONDS if self.window_seconds is None else self.window_seconds,
            allowed_lateness_seconds=(cls.DEFAULT_ALLOWED_LATENESS_SECONDS if self.allowed_lateness_seconds is None
                                      else self.allowed_lateness_seconds),
            early_firing_seconds=self.early_firing_seconds or None,
        )

    def replay_config(self) -> ReplayConfig:
        return ReplayConfig(self.max_out_of_orderness_seconds, self.replay_chunk_size)

    @property
    def hash_salt(self) -> str:
        return self.pii_salt or os.environ.get("KAPPAFLOW_PII_SALT") or "kappaflow-default-salt"

    @property
    def dead_letters_url(self) -> str:
        return self.dead_letter_output or self.output
