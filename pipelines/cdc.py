"""CDC: Debezium change events → the source tables, replicated into the `--output` database.

    python -m pipelines.cdc --input='cdc/*.jsonl' --output=sqlite:///replica.db \
        --primary_keys=customers:customer_id,orders:store_id+order_id [--streaming] [--report=run.json]
    ... --output=bigquery:PROJECT.DATASET --temp_location=gs://BUCKET/tmp   (a versioned MERGE per table)

read → parse Debezium envelopes (order position per change) → event time
     → apply: per row, the change with the greatest version wins (versioned upsert; deletes
       leave tombstones), tables created and widened from the images
Every rejected event goes to the `dead_letters` table with its reason.
"""

from __future__ import annotations

import apache_beam as beam

from io_connectors.bigquery import is_bigquery_url
from io_connectors.bigquery_cdc import ApplyChangesToBigQuery
from io_connectors.cdc_sink import ApplyChanges
from io_connectors.sinks import is_database_url
from io_connectors.sources import ReadInput
from kappaflow.cli import run_main
from kappaflow.options import CdcFlags, KappaflowOptions
from kappaflow.wiring import bigquery_write_config, dead_letters, kafka_read_config
from transforms.debezium import ParseChanges, PrimaryKeys
from transforms.event_time import EventTimeOf, WithEventTime

PIPELINE = "cdc"
# When the change was made (source.ts_ms), else when the connector saw it; wrapped or bare.
CHANGE_TIME = EventTimeOf("payload.source.ts_ms", "source.ts_ms", "payload.ts_ms", "ts_ms")


class CdcOptions(KappaflowOptions, CdcFlags):
    # A change is refused as invalid, or applied, or already there (a re-delivery), or beaten by a
    # newer change of its row, or refused by the target table.
    OUTCOMES = ("invalid", "applied", "duplicates", "superseded", "rejected")


def build(p: beam.Pipeline, opts: CdcOptions) -> None:
    if not opts.primary_keys:
        raise ValueError("--primary_keys is required: table:column[+column],... for every source table")
    if not (is_database_url(opts.output) or is_bigquery_url(opts.output)):
        raise ValueError("--output must be a database URL (SQLite or PostgreSQL) or bigquery:PROJECT.DATASET: "
                         "changes are applied by version")
    keys = PrimaryKeys.parse(opts.primary_keys)
    replay = opts.replay_config()
    streaming = bool(opts.view_as(beam.options.pipeline_options.StandardOptions).streaming)

    bounds = opts.event_time_bounds()
    with dead_letters(opts, PIPELINE) as rejected:
        records = p | "ReadInput" >> ReadInput(opts.input, streaming, bounds.guard(CHANGE_TIME), replay,
                                               kafka=kafka_read_config(opts))
        parsed = rejected.collect(records | "ParseChanges" >> ParseChanges(keys, opts.max_record_bytes))
        timed = rejected.collect(parsed | "EventTime" >> WithEventTime("event_time", bounds=bounds))
        # No dedup step: a change however late must still be applied, and the versioned apply counts
        # a re-delivery (the row, or its batch, already holds that version) as a duplicate.
        if is_bigquery_url(opts.output):
            apply = ApplyChangesToBigQuery(opts.output, keys, bigquery_write_config(opts))
        else:
            apply = ApplyChanges(opts.output, keys, opts.apply_batch_size)
        rejected.collect(timed | "ApplyChanges" >> apply)


def main() -> None:
    run_main(PIPELINE, build, CdcOptions)


if __name__ == "__main__":
    main()
