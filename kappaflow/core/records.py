"""The element types that cross module boundaries: raw input records, rejections and dead letters."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import time
from typing import Any, NamedTuple, Optional

from kappaflow.core.schema import Field, FieldType, Schema, format_timestamp

__all__ = ["RawRecord", "Rejection", "DEAD_LETTER_SCHEMA", "dead_letter", "dead_letter_row", "DEAD_LETTER_TAG",
           "redact_ips", "printable_text", "SOURCE_WATERMARK", "BOUNDED_WATERMARK"]

# Tag of every transform's dead-letter output: its elements are Rejections.
DEAD_LETTER_TAG = "dead_letter"
# Where the parser puts RawRecord.watermark in the event, for the late-data router (which removes it).
SOURCE_WATERMARK = "_source_watermark"
# The watermark of a bounded source while it is read: nothing it holds can be late until all is read.
BOUNDED_WATERMARK = float("-inf")


class RawRecord(NamedTuple):
    """One input record before parsing, with where it came from (for error messages and ids)."""

    payload: Any  # bytes or str (JSON text) or a dict (CSV, Avro, Parquet, BigQuery rows)
    origin: str  # "path:line", "path#row", or a Pub/Sub message id
    ingest_time: Optional[float] = None  # seconds; publish time or an ingest column, when known
    # Seconds: the watermark its source had reached when it read this record. Files know it (a
    # bounded read: -inf, BOUNDED_WATERMARK; a replay: see io_connectors/replay.py); live sources
    # do not (None). A record behind it was late before any step saw it.
    watermark: Optional[float] = None


class Rejection(NamedTuple):
    """A record a stage cannot pass on, and why: what every stage's dead-letter output carries.

    The stage says only what it knows. One step (io_connectors/dead_letter_sink.WriteDeadLetters,
    via `dead_letter_row`) adds the pipeline, reads the record's id, redacts, and makes the row."""

    stage: str  # where: parse, clock, units, range, event_time, late, enrich, sink, apply, publish
    reason: str  # why, naming the field
    # The record as the stage saw it: an event dict (its id is read from the pipeline's id field),
    # or text (a raw payload, a sink's row) that is quoted as it is.
    element: Any
    origin: str = ""  # where it came from (file:line, message id), when the stage knows
    event_id: Optional[str] = None  # the id when the element does not hold it under the id field
    event_time: Optional[float] = None  # seconds
    window_start: Optional[float] = None  # stage late: the window it missed


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


# IP literals hide in runs of hex digits, dots and colons. The run is matched possessively and
# each candidate is checked by `ipaddress`, so the scan is linear in the text (a backtracking
# pattern took minutes on a hostile megabyte), "::1" and "10.0.0.1:8080" are caught, and a
# time such as "08:00:00" is not. A `\uXXXX` / `\xXX` escape (JSON text, printable_text) is a
# token of its own, matched first and kept: its hex digits would otherwise glue onto an address
# right after it ("\u00e92001:db8::1" is no address, "2001:db8::1" is).
_ESCAPE = r"\\(?:u[0-9A-Fa-f]{4}|x[0-9A-Fa-f]{2}|U[0-9A-Fa-f]{8})"
_RUN = re.compile(rf"(?P<escape>{_ESCAPE})|[0-9A-Fa-f.:]{{3,}}+")
_DOTTED_QUAD = re.compile(r"(?<![0-9])[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?![0-9])")
_REDACTED = "<redacted>"
_MAX_IP_CHARS = 45  # the longest IPv6 literal (with an IPv4 tail)


def redact_ips(text: str) -> str:
    """Every IPv4/IPv6 literal in `text` → `<redacted>`: dead letters quote what they reject."""
    return _RUN.sub(_redact_run, text)


def _redact_run(match: re.Match) -> str:
    run = match.group(0)
    if match.group("escape") or run.count(".") + run.count(":") < 2:
        return run
    # The run, or (IPv6) a dot-free piece of it: hex letters of the words around glue on. Less
    # the punctuation or the :port that follows.
    pieces = [run] + ([p for p in run.split(".") if p.count(":") >= 2] if ":" in run else [])
    for piece in pieces:
        for candidate in (piece, piece.strip(".:"), piece.rsplit(":", 1)[0]):
            if len(candidate) <= _MAX_IP_CHARS and _is_ip(candidate):
                run = run.replace(candidate, _REDACTED)
                break
    return _DOTTED_QUAD.sub(lambda quad: _REDACTED if _is_ip(quad.group(0)) else quad.group(0), run)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def printable_text(text: str) -> str:
    """`text` with what UTF-8 cannot encode (lone surrogates from JSON escapes like "\\ud800")
    spelled as backslash escapes: every sink and coder can store the result."""
    return text.encode("utf-8", errors="backslashreplace").decode("utf-8")


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
    # Redacted and encodable whatever the stage quotes: payloads and reasons carry input values.
    text = redact_ips(printable_text(payload_text(payload)))
    reason = redact_ips(printable_text(reason))
    origin = printable_text(origin)
    event_id = None if event_id is None else redact_ips(printable_text(event_id))
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


def dead_letter_row(rejection: Rejection, pipeline: str, id_field: Optional[str] = None) -> dict:
    """A stage's Rejection → its `dead_letters` row. `id_field`: the pipeline's record id, read
    from an event dict when the rejection names no id (a non-string value is no id)."""
    event_id, element = rejection.event_id, rejection.element
    if event_id is None and id_field and isinstance(element, dict):
        found = element.get(id_field)
        event_id = found if isinstance(found, str) else None
    return dead_letter(pipeline, rejection.stage, rejection.reason, element, rejection.origin,
                       event_id, rejection.event_time, rejection.window_start)
