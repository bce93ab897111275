"""Clickstream record types, declared once: input event and output metrics table."""

from kappaflow.core.schema import Field, FieldType, Schema

CLICKSTREAM_EVENT = Schema(
    name="clickstream_event",
    description="A web or app event as it arrives.",
    fields=(
        Field("event_id", FieldType.STRING, required=True, description="Unique per event; dedup key."),
        Field("user_id", FieldType.STRING, required=True),
        Field("session_id", FieldType.STRING),
        Field("event_type", FieldType.STRING, required=True, description="page_view, click, purchase, ..."),
        Field("timestamp", FieldType.TIMESTAMP, required=True, description="Event time."),
        Field("properties", FieldType.RECORD, fields=(
            Field("product_id", FieldType.STRING),
            # Summed into revenue: a bound keeps every window's sum finite.
            Field("price", FieldType.FLOAT64, max_abs=1e12, description="At most 1e12 in magnitude."),
        )),
        Field("context", FieldType.RECORD, fields=(
            Field("ip", FieldType.STRING, pii=True, description="Kept only as a salted hash."),
            Field("user_agent", FieldType.STRING),
            Field("locale", FieldType.STRING),
        )),
    ),
)

CLICKSTREAM_METRICS = Schema(
    name="clickstream_metrics",
    description="Per-window clickstream metrics by event type and country; one row per key.",
    key=("window_start", "event_type", "country"),
    partition_field="window_start",
    cluster_fields=("event_type", "country"),
    fields=(
        Field("window_start", FieldType.TIMESTAMP, required=True, description="Window start (UTC)."),
        Field("window_end", FieldType.TIMESTAMP, required=True, description="Window end (UTC, exclusive)."),
        Field("event_type", FieldType.STRING, required=True),
        Field("country", FieldType.STRING, required=True, description="From users; 'unknown' if missing."),
        Field("events", FieldType.INT64, required=True, description="Unique events."),
        Field("unique_users", FieldType.INT64, required=True, description="Distinct user_id."),
        Field("revenue", FieldType.FLOAT64, required=True, description="Sum of price over purchases."),
        Field("pane_timing", FieldType.STRING, required=True, description="EARLY, ON_TIME or LATE."),
        Field("pane_index", FieldType.INT64, required=True, description="0 for the first pane."),
        Field("updated_at", FieldType.TIMESTAMP, required=True, description="When this pane was written."),
    ),
)
