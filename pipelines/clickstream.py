"""Clickstream: web/app events → per-window metrics by event type and country.

    python -m pipelines.clickstream --input='events/*.jsonl' --output=sqlite:///out.db \
        --reference_db=sqlite:///reference.db [--streaming] [--report=run.json]
    python -m pipelines.clickstream --streaming --input_subscription=projects/P/subscriptions/S ...

read → parse/validate → event time (within --max_future_seconds) → route too-late records → dedup by event_id
     → enrich (users, products) → fixed windows → events, unique users, revenue → upsert
Every rejected record goes to the `dead_letters` table with its reason.
"""

from __future__ import annotations

import apache_beam as beam

from io_connectors.sinks import WriteTable
from kappaflow.cli import run_main
from kappaflow.core.records import SOURCE_WATERMARK
from kappaflow.core.schemas.clickstream import CLICKSTREAM_EVENT, CLICKSTREAM_METRICS
from kappaflow.options import EnrichmentOptions, KappaflowOptions, PubSubInputOptions, WindowOptions
from kappaflow.wiring import bigquery_write_config, dead_letters, read_input
from transforms.aggregate import AggregatePerWindow, Metric
from transforms.dedup import DeduplicateEvents
from transforms.enrich_database import EnrichFromDatabase, LookupSpec
from transforms.event_time import WithEventTime
from transforms.late_data import RouteTooLateRecords
from transforms.parse import ParseEvents

PIPELINE = "clickstream"

LOOKUPS = (
    LookupSpec("users", "user_id", "user_id", {"country": "country", "segment": "segment"},
               defaults={"country": "unknown", "segment": "unknown"}),
    LookupSpec("products", "product_id", "product_id", {"category": "category"},
               defaults={"category": "unknown"}),
)
METRICS = (
    Metric("events", "count"),
    Metric("unique_users", "distinct", "user_id"),
    Metric("revenue", "sum", "revenue"),
)


class ClickstreamOptions(KappaflowOptions, EnrichmentOptions, WindowOptions, PubSubInputOptions):
    OUTCOMES = ("invalid", "too_late", "duplicates", "enrich_failed", "aggregated")


def reference_lookups(opts: ClickstreamOptions) -> tuple[LookupSpec, ...]:
    """What the run looks up in --reference_db (checked before the run starts)."""
    return LOOKUPS


def to_metric_input(event: dict) -> dict:
    """The fields the metrics need; the rest (and the hashed IP) stops here."""
    properties = event.get("properties") or {}
    price = properties.get("price")
    selected = {
        "event_id": event["event_id"],
        "user_id": event["user_id"],
        "event_type": event["event_type"],
        "product_id": properties.get("product_id"),
        "revenue": price if event["event_type"] == "purchase" and price is not None else 0.0,
    }
    if SOURCE_WATERMARK in event:  # a replay's: for RouteTooLate, which removes it
        selected[SOURCE_WATERMARK] = event[SOURCE_WATERMARK]
    return selected


def build(p: beam.Pipeline, opts: ClickstreamOptions) -> None:
    if not opts.reference_db:
        raise ValueError("--reference_db is required: the users and products tables live there")
    windows = opts.window_config()

    with dead_letters(opts, PIPELINE, id_field="event_id") as rejected:
        records = p | "ReadInput" >> read_input(opts, time_field="timestamp", id_field="event_id")
        parsed = rejected.collect(records | "ParseEvents" >> ParseEvents(
            CLICKSTREAM_EVENT, opts.hash_salt, opts.max_record_bytes))
        timed = rejected.collect(parsed | "EventTime" >> WithEventTime("timestamp", opts.event_time_bounds()))
        in_time = rejected.collect(
            timed
            | "SelectFields" >> beam.Map(to_metric_input)
            | "RouteTooLate" >> RouteTooLateRecords(windows, shard_key=lambda e: e["event_id"])
        )
        unique = in_time | "DedupByEventId" >> DeduplicateEvents(lambda e: e["event_id"], opts.dedup_config(windows))
        enriched = rejected.collect(unique | "Enrich" >> EnrichFromDatabase(opts.reference_db, reference_lookups(opts)))
        rows = enriched | "AggregatePerWindow" >> AggregatePerWindow(
            ("event_type", "country"), METRICS, windows, table=CLICKSTREAM_METRICS)
        rejected.collect(rows | "WriteMetrics" >> WriteTable(
            opts.output, CLICKSTREAM_METRICS, bigquery=bigquery_write_config(opts)))


def main() -> None:
    run_main(PIPELINE, build, ClickstreamOptions)


if __name__ == "__main__":
    main()
