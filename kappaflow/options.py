"""Command-line options shared by every pipeline (Beam's own options come on top)."""

from __future__ import annotations

import os

from apache_beam.options.pipeline_options import PipelineOptions

__all__ = ["KappaflowOptions"]

DEFAULT_OUTPUT = "sqlite:///kappaflow.db"


class KappaflowOptions(PipelineOptions):
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
        parser.add_argument("--window_seconds", type=float, default=60.0)
        parser.add_argument("--allowed_lateness_seconds", type=float, default=900.0)
        parser.add_argument("--early_firing_seconds", type=float, default=30.0,
                            help="Early panes every N seconds of processing time (streaming only); 0: none.")
        parser.add_argument("--dedup_horizon_seconds", type=float, default=3600.0)
        parser.add_argument("--max_out_of_orderness_seconds", type=float, default=60.0,
                            help="Streaming replay: the watermark trails the largest event time by this much.")
        parser.add_argument("--replay_chunk_size", type=int, default=500,
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
        parser.add_argument("--report", default=None, help="Write the run's accounting as JSON here.")
        parser.add_argument("--pii_salt", default=os.environ.get("KAPPAFLOW_PII_SALT", "kappaflow-default-salt"),
                            help="Salt of the PII hashes (default: $KAPPAFLOW_PII_SALT). Set your own in production.")

    @property
    def dead_letters_url(self) -> str:
        return self.dead_letter_output or self.output
