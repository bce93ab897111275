"""IoT sensors: readings → per-device window statistics, over-threshold alerts, a raw archive.

    python -m pipelines.iot_sensors --input='readings/*.jsonl' --output=sqlite:///out.db \
        --reference_db=sqlite:///reference.db [--ingest_time_field=ingest_time] [--archive=DIR] \
        [--streaming] [--report=run.json]
    python -m pipelines.iot_sensors --streaming --input_subscription=projects/P/subscriptions/S \
        --alerts_topic=projects/P/topics/ALERTS ...   (ingest time = Pub/Sub publish time)
    python -m pipelines.iot_sensors --streaming --runner=PrismRunner --input=kafka://HOST:9092/readings \
        --alerts_topic=kafka://HOST:9092/alerts ...   (ingest time = the Kafka timestamp, i.e. the
        gateway's send time, or --ingest_time_field; see io_connectors/kafka.py for the watermark)

read → parse/validate → clock skew → units → plausible range → event time → route too-late records
     → dedup by (device_id, device time) → enrich (devices) → [archive] → exclude quality != good
     → per-device windows: count, min, max, avg, p95 → sensor_stats → alerts → sensor_alerts
       [→ alerts topic: Pub/Sub with alert_id as an attribute, or Kafka keyed by alert_id]
Every rejected record goes to the `dead_letters` table with its reason.
"""

from __future__ import annotations

import datetime as dt

import apache_beam as beam

from io_connectors.archive import WriteArchive
from io_connectors.kafka import WriteKafkaMessages, is_kafka_url
from io_connectors.pubsub import PublishMessages
from io_connectors.sinks import WriteTable
from kappaflow.core import metrics
from kappaflow.core.schemas.iot import IOT_ARCHIVE, IOT_READING, SENSOR_ALERTS, SENSOR_STATS
from kappaflow.cli import run_main
from kappaflow.options import (EnrichmentOptions, IotSensorsFlags, KappaflowOptions, PubSubInputOptions,
                               WindowOptions)
from kappaflow.wiring import bigquery_write_config, dead_letters, kafka_write_config, read_input
from transforms.aggregate import AggregatePerWindow, Metric
from transforms.alerts import RaiseThresholdAlerts, ThresholdAlertConfig
from transforms.clock_skew import ClockSkewConfig, CorrectClockSkew, SkewCorrectedEventTime
from transforms.dedup import DeduplicateEvents
from transforms.enrich_database import EnrichFromDatabase, LookupSpec
from transforms.event_time import WithEventTime
from transforms.exclude import ExcludeRecords
from transforms.late_data import RouteTooLateRecords
from transforms.parse import ParseEvents
from transforms.units import CheckPlausibleRanges, NormalizeUnits, PlausibleRanges
from transforms.windowing import WindowConfig

PIPELINE = "iot_sensors"
ARCHIVE_PARTITIONS = ("event_date", "device_type")

METRICS = (
    Metric("count", "count"),
    Metric("min", "min", "value"),
    Metric("max", "max", "value"),
    Metric("avg", "mean", "value"),
    Metric("p95", "percentile", "value", q=0.95),
    # Constant per device in practice; min/max make the row deterministic if messages disagree.
    Metric("device_type", "max", "device_type"),
    Metric("facility", "max", "facility"),
    Metric("line", "max", "line"),
    Metric("threshold", "min", "max_temp_c"),  # the strictest threshold seen in the window
)


class IotSensorsOptions(KappaflowOptions, EnrichmentOptions, WindowOptions, PubSubInputOptions,
                        IotSensorsFlags):
    # Sensors report often and late data matters for minutes, not for a quarter of an hour.
    DEFAULT_WINDOW_SECONDS = 10.0
    DEFAULT_ALLOWED_LATENESS_SECONDS = 60.0
    OUTCOMES = ("invalid", "too_late", "duplicates", "enrich_failed", "excluded", "aggregated")


def device_lookup(default_max_temp_c: float) -> LookupSpec:
    """The registry wins; an unregistered device keeps the location its message gave."""
    return LookupSpec(
        "devices", "device_id", "device_id",
        {"facility": "facility", "line": "line", "zone": "zone", "model": "model", "max_temp_c": "max_temp_c"},
        defaults={"model": "unknown", "max_temp_c": default_max_temp_c}, keep_existing=True,
    )


def reference_lookups(opts: IotSensorsOptions) -> tuple[LookupSpec, ...]:
    """What the run looks up in --reference_db (checked before the run starts)."""
    return (device_lookup(opts.default_max_temp_c),)


def to_reading(event: dict) -> dict:
    """Flatten the location: the registry fills the same fields."""
    location = event.get("location") or {}
    reading = {k: v for k, v in event.items() if k != "location"}  # Beam inputs are immutable
    return {**reading, **{f: location.get(f) for f in ("facility", "line", "zone")}}


def dedup_key(reading: dict) -> str:
    """(device, what the device said): re-deliveries of a skewed reading share it."""
    device_time = reading["device_timestamp"]
    return f"{reading['device_id']}|{reading['timestamp'] if device_time is None else device_time}"


def to_archive_row(reading: dict) -> dict:
    day = dt.datetime.fromtimestamp(reading["timestamp"], dt.timezone.utc).date().isoformat()
    return {**reading, "event_date": day,
            "location": {f: reading[f] for f in ("facility", "line", "zone")}}


def build(p: beam.Pipeline, opts: IotSensorsOptions) -> None:
    if not opts.reference_db:
        raise ValueError("--reference_db is required: the devices table lives there")
    windows = opts.window_config()
    skew = ClockSkewConfig(opts.max_clock_skew_seconds)
    ranges = PlausibleRanges.parse(opts.valid_ranges)

    with dead_letters(opts, PIPELINE, id_field="device_id") as rejected:
        records = p | "ReadInput" >> read_input(
            opts, "timestamp", event_time=SkewCorrectedEventTime(skew), ingest_time_field=opts.ingest_time_field)
        parsed = rejected.collect(records | "ParseReadings" >> ParseEvents(
            IOT_READING, max_record_bytes=opts.max_record_bytes))
        corrected = rejected.collect(parsed | "CorrectClockSkew" >> CorrectClockSkew(skew))
        converted = rejected.collect(corrected | "NormalizeUnits" >> NormalizeUnits(quantity_field="device_type"))
        plausible = rejected.collect(converted | "CheckRanges" >> CheckPlausibleRanges(ranges))
        timed = rejected.collect(plausible | "EventTime" >> WithEventTime("timestamp", opts.event_time_bounds()))
        in_time = rejected.collect(
            timed
            | "FlattenLocation" >> beam.Map(to_reading)
            | "RouteTooLate" >> RouteTooLateRecords(windows, shard_key=lambda r: r["device_id"])
        )
        unique = in_time | "DedupByDeviceAndTime" >> DeduplicateEvents(dedup_key, opts.dedup_config(windows))
        enriched = rejected.collect(unique | "EnrichFromRegistry" >> EnrichFromDatabase(
            opts.reference_db, reference_lookups(opts)))
        if opts.archive:
            archive_windows = WindowConfig(
                size_seconds=opts.archive_window_seconds, allowed_lateness_seconds=windows.allowed_lateness_seconds,
                early_firing_seconds=None, late_margin_seconds=windows.late_margin)
            (enriched | "ToArchiveRows" >> beam.Map(to_archive_row)
             | "ArchiveReadings" >> WriteArchive(opts.archive, IOT_ARCHIVE, ARCHIVE_PARTITIONS, archive_windows))
        stats = (
            enriched
            | "ExcludeBadQuality" >> ExcludeRecords(lambda r: r["quality"] == "good")
            | "AggregatePerWindow" >> AggregatePerWindow(("device_id",), METRICS, windows, table=SENSOR_STATS)
        )
        rejected.collect(stats | "WriteStats" >> WriteTable(
            opts.output, SENSOR_STATS, bigquery=bigquery_write_config(opts)))
        alerts = stats | "RaiseAlerts" >> RaiseThresholdAlerts(
            ThresholdAlertConfig(("device_id",), applies=lambda row: row["device_type"] == "temperature"))
        rejected.collect(alerts | "WriteAlerts" >> WriteTable(
            opts.output, SENSOR_ALERTS, counter=metrics.ALERTS_WRITTEN, keep_on_update=("created_at",),
            bigquery=bigquery_write_config(opts)))
        # Every pane of an alert; consumers dedup on alert_id (a Pub/Sub attribute, the Kafka key),
        # keeping the highest pane_index.
        if is_kafka_url(opts.alerts_topic):  # a failed send fails the bundle: the runner retries it
            alerts | "PublishAlertsToKafka" >> WriteKafkaMessages(
                kafka_write_config(opts, opts.alerts_topic), "alert_id", schema=SENSOR_ALERTS)
        elif opts.alerts_topic:
            rejected.collect(alerts | "PublishAlerts" >> PublishMessages(
                opts.alerts_topic, ("alert_id", "device_id", "severity"), schema=SENSOR_ALERTS))


def main() -> None:
    run_main(PIPELINE, build, IotSensorsOptions)


if __name__ == "__main__":
    main()
