"""IoT sensor record types, declared once: input reading, raw archive row, statistics and alerts."""

from kappaflow.core.schema import Field, FieldType, Schema

_LOCATION = (
    Field("facility", FieldType.STRING),
    # Text ("line-2") or a number (2, as the product's own scenario sends it), kept as text.
    Field("line", FieldType.STRING, integer_as_text=True,
          description="Production line: a string, or an integer stored as its decimal text."),
    Field("zone", FieldType.STRING),
)

IOT_READING = Schema(
    name="iot_reading",
    description="A sensor reading as it arrives.",
    fields=(
        Field("device_id", FieldType.STRING, required=True),
        Field("device_type", FieldType.STRING, required=True, description="temperature, pressure, humidity, ..."),
        Field("timestamp", FieldType.TIMESTAMP,
              description="Device time (epoch ms or ISO-8601); may be missing when the source knows "
                          "an ingest time."),
        Field("value", FieldType.FLOAT64, required=True),
        Field("unit", FieldType.STRING, required=True,
              description="celsius, fahrenheit, kelvin, hPa, percent, ..."),
        Field("location", FieldType.RECORD, fields=_LOCATION,
              description="Where the device says it is; the device registry wins."),
        Field("quality", FieldType.STRING, description="Only 'good' readings enter the statistics."),
        Field("battery_voltage", FieldType.FLOAT64),
    ),
)

IOT_ARCHIVE = Schema(
    name="iot_readings",
    description="Enriched readings as archived (Parquet, partitioned by event_date and device_type). "
                "Read back through the pipeline, they give the same statistics.",
    partition_field="timestamp",
    fields=(
        Field("device_id", FieldType.STRING, required=True),
        Field("device_type", FieldType.STRING, required=True),
        Field("event_date", FieldType.STRING, required=True, description="UTC date of timestamp (partition)."),
        Field("timestamp", FieldType.TIMESTAMP, required=True,
              description="Event time, after clock-skew correction."),
        Field("device_timestamp", FieldType.TIMESTAMP, description="What the device said, if anything."),
        Field("ingest_time", FieldType.TIMESTAMP, description="When it was ingested, when known."),
        Field("clock_corrected", FieldType.BOOL, required=True, description="timestamp is the ingest time."),
        Field("value", FieldType.FLOAT64, required=True, description="In the canonical unit."),
        Field("unit", FieldType.STRING, required=True, description="celsius, hPa, percent."),
        Field("quality", FieldType.STRING),
        Field("battery_voltage", FieldType.FLOAT64),
        Field("location", FieldType.RECORD, fields=_LOCATION, description="From the registry, else the message."),
        Field("model", FieldType.STRING),
        Field("max_temp_c", FieldType.FLOAT64, description="Alert threshold in force."),
    ),
)

SENSOR_STATS = Schema(
    name="sensor_stats",
    description="Per-device statistics of good readings per event-time window; one row per key.",
    key=("window_start", "device_id"),
    partition_field="window_start",
    cluster_fields=("device_id",),
    fields=(
        Field("window_start", FieldType.TIMESTAMP, required=True),
        Field("window_end", FieldType.TIMESTAMP, required=True, description="Exclusive."),
        Field("device_id", FieldType.STRING, required=True),
        Field("facility", FieldType.STRING),
        Field("line", FieldType.STRING),
        Field("count", FieldType.INT64, required=True),
        Field("min", FieldType.FLOAT64, required=True),
        Field("max", FieldType.FLOAT64, required=True),
        Field("avg", FieldType.FLOAT64, required=True),
        Field("p95", FieldType.FLOAT64, required=True, description="Nearest-rank 95th percentile."),
        Field("pane_timing", FieldType.STRING, required=True, description="EARLY, ON_TIME or LATE."),
        Field("pane_index", FieldType.INT64, required=True),
        Field("updated_at", FieldType.TIMESTAMP, required=True),
    ),
)

SENSOR_ALERTS = Schema(
    name="sensor_alerts",
    description="One alert per device and window whose max temperature exceeded the device's threshold.",
    key=("alert_id",),
    partition_field="window_start",
    cluster_fields=("device_id",),
    fields=(
        Field("alert_id", FieldType.STRING, required=True, description="device_id/window_start."),
        Field("device_id", FieldType.STRING, required=True),
        Field("window_start", FieldType.TIMESTAMP, required=True),
        Field("window_end", FieldType.TIMESTAMP, required=True),
        Field("max", FieldType.FLOAT64, required=True, description="°C; a later pane may raise it."),
        Field("threshold", FieldType.FLOAT64, required=True, description="max_temp_c, °C."),
        Field("severity", FieldType.STRING, required=True, description="warning, or critical at 10 °C above."),
        Field("created_at", FieldType.TIMESTAMP, required=True, description="First raised; never updated."),
        Field("pane_index", FieldType.INT64,
              description="Pane of the statistics window that raised or last updated it; orders an alert's rows "
                          "in append-only outputs (BigQuery)."),
        Field("updated_at", FieldType.TIMESTAMP, description="When that pane was written."),
    ),
)
