"""The element types that cross module boundaries: raw input records and dead letters."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, NamedTuple, Optional

from transforms.schema import Field, FieldType, Schema, format_timestamp

__all__ = ["RawRecord", "DEAD_LETTER_SCHEMA", "dead_letter", "DEAD_LETTER_TAG"]

# Tag of every transform's dead-letter output.
DEAD_LETTER_TAG = "dead_letter"


class RawRecord(NamedTuple):
    """One input record before parsing, with where it came from (for error messages and ids)."""

    payload: Any  # bytes or str (JSON text) or a dict (CSV, Avro, Parquet, BigQuery rows)
    origin: str  # "path:line", "path#row", or a Pub/Sub message id
    ingest_time: Optional[float] = None  # seconds; publish time or an ingest column, when known


DEAD_LETTER_SCHEMA = Schema(
    name="dead_letters",
    description="Records that did not reach an output, with the reason.",
    key=("dead_letter_id",),
    partition_field="rejected_at",
    cluster_fields=("pipeline", "stage"),
    fields=(
        Field("dead_letter_id", FieldType.STRING, required=True,
              description="Deterministic id: reruns and replays upsert the same row."),
        Field("pipeline", FieldType.STRING, required=True, description="Pipeline that rejected it."),
        Field("stage", FieldType.STRING, required=True,
              description="parse, enrich, late, sink, ... : where it was rejected."),
        Field("reason", FieldType.STRING, required=True, description="Why, naming the field."),
        Field("payload", FieldType.STRING, description="The raw record (PII redacted)."),
        Field("origin", FieldType.STRING, description="Where the record came from (file:line, message id)."),
        Field("event_id", FieldType.STRING, description="The record's id, when it could be read."),
        Field("event_time", FieldType.TIMESTAMP, description="The record's event time, when known."),
        Field("window_start", FieldType.TIMESTAMP, description="For stage=late: the window it missed."),
        Field("rejected_at", FieldType.TIMESTAMP, required=True, description="When it was rejected."),
    ),
)


def payload_text(payload: Any) -> str:
    if isinstance(payload, bytes):
        return payload.decode("utf-8", errors="replace")
    if isinstance(payload, str):
        return payload
    return json.dumps(payload, sort_keys=True, default=str)


def dead_letter(
    pipeline: str,
    stage: str,
    reason: str,
    payload: Any,
    origin: str = "",
    event_id: Optional[str] = None,
    event_time: Optional[float] = None,
    window_start: Optional[float] = None,
) -> dict:
    text = payload_text(payload)
    identity = "\x1f".join(
        [pipeline, stage, origin, text, "" if window_start is None else format_timestamp(window_start)]
    )
    return {
        "dead_letter_id": hashlib.sha256(identity.encode("utf-8")).hexdigest()[:32],
        "pipeline": pipeline,
        "stage": stage,
        "reason": reason,
        "payload": text,
        "origin": origin,
        "event_id": event_id,
        "event_time": event_time,
        "window_start": window_start,
        "rejected_at": time.time(),
    }
