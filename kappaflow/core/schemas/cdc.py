"""CDC record types, declared once: the Debezium change event envelope as it arrives.

The target tables are not declared here: their columns come from the change images at run time
(io_connectors/change_tables.py).
"""

from kappaflow.core.schema import Field, FieldType, Schema

DEBEZIUM_CHANGE_EVENT = Schema(
    name="debezium_change_event",
    description="A Debezium change event envelope (the `payload` of the Kafka Connect wrapper).",
    fields=(
        Field("op", FieldType.STRING, required=True, description="c create, u update, d delete, r snapshot read."),
        Field("before", FieldType.JSON, description="Row image before the change (deletes: at least the key)."),
        Field("after", FieldType.JSON, description="Row image after the change (null for deletes)."),
        Field("source", FieldType.RECORD, required=True, description="Where the change was read.", fields=(
            Field("table", FieldType.STRING, required=True),
            Field("db", FieldType.STRING),
            Field("lsn", FieldType.INT64, description="PostgreSQL: log sequence number of the change."),
            Field("file", FieldType.STRING, description="MySQL: binlog file name."),
            Field("pos", FieldType.INT64, description="MySQL: position of the event in the binlog file."),
            Field("row", FieldType.INT64, description="MySQL: row of a multi-row binlog event."),
            Field("ts_ms", FieldType.TIMESTAMP, description="When the change was made in the database."),
        )),
        Field("ts_ms", FieldType.TIMESTAMP, description="When the connector processed the change."),
    ),
)
