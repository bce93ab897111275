"""Debezium change events → row changes that know their place in the row's history.

Both forms are read: the bare envelope `{before, after, source, op, ts_ms}` and the Kafka Connect
wrapper `{schema, payload}`. A change is a dict:

    change_id   table, key and version: equal for re-deliveries of one change, and only for them
    table, key  the source table and the primary-key values (tuple, in `--primary_keys` order)
    op          c, u, d or r
    version     text that sorts in change order for one row (below)
    image       `after` for c/u/r; None for d (the key comes from `before`)
    types       column → FieldType name, from the Kafka Connect schema of the wrapper when it has
                one (empty otherwise): the target's column types then do not depend on values
    event_time  source.ts_ms (else ts_ms), epoch seconds
    origin      file:line of the event

The version is the order position, then a tie-breaker, as text compared byte by byte:
    L<lsn, 20 digits>                        PostgreSQL (source.lsn)
    B<file> <pos, 20 digits><row, 10 digits> MySQL binlog (source.file, pos, row)
    T<ts_ms, 20 digits>                      otherwise (source.ts_ms)
followed by `/<op rank>/<content hash>`. The op rank (r < c < u < d) makes a snapshot read lose
to a change at the same position; the content hash makes the order total, so every worker, rerun
and replay picks the same winner. One connector gives all changes of a row the same kind of
position; across kinds the order is arbitrary but still deterministic.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any, Mapping, Optional

import apache_beam as beam

from kappaflow.core.records import DEAD_LETTER_TAG, RawRecord, Rejection, payload_text
from kappaflow.core.schema import short_repr
from kappaflow.core.schemas.cdc import DEBEZIUM_CHANGE_EVENT
from transforms.parse import DEFAULT_MAX_RECORD_BYTES, ParseEventFn

__all__ = ["PrimaryKeys", "ChangeError", "unwrap", "column_types", "to_change", "ParseChangeFn", "ParseChanges",
           "OPS", "is_plain_identifier", "identifier_problem", "MAX_IDENTIFIER_BYTES"]

# Rank of each op among changes at the same position.
OPS = {"r": 0, "c": 1, "u": 2, "d": 3}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# PostgreSQL cuts longer names to 63 bytes (NAMEDATALEN - 1) with only a notice, so two long
# names that share their first 63 bytes would become one table or column.
MAX_IDENTIFIER_BYTES = 63


def identifier_problem(name: Any) -> Optional[str]:
    """Why `name` is not a table or column name we accept, or None: plain SQL identifiers that
    need no quoting anywhere and fit every target database."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        return f"{short_repr(name)} is not a plain identifier"
    if len(name) > MAX_IDENTIFIER_BYTES:  # plain identifiers are ASCII: characters are bytes
        return (f"{short_repr(name)} is {len(name)} bytes, longer than the {MAX_IDENTIFIER_BYTES} "
                f"PostgreSQL keeps")
    return None


def is_plain_identifier(name: Any) -> bool:
    return identifier_problem(name) is None


@dataclasses.dataclass(frozen=True)
class PrimaryKeys:
    """Primary-key columns per source table; tables not listed are unknown (dead letters)."""

    tables: Mapping[str, tuple[str, ...]]

    def __post_init__(self) -> None:
        if not self.tables:
            raise ValueError("no primary keys: name at least one table:column")
        for table, columns in self.tables.items():
            for name in (table, *columns):
                problem = identifier_problem(name)
                if problem:
                    raise ValueError(f"--primary_keys: {problem}")
            if not columns or len(set(columns)) != len(columns):
                raise ValueError(f"primary keys of {table}: empty or repeated columns")

    @classmethod
    def parse(cls, text: str) -> "PrimaryKeys":
        """`customers:customer_id,order_lines:order_id+line_no` (`+` joins a composite key)."""
        tables: dict[str, tuple[str, ...]] = {}
        for item in filter(None, (part.strip() for part in (text or "").split(","))):
            table, sep, columns = item.partition(":")
            if not sep or table in tables:
                raise ValueError(f"primary keys: {item!r} is not table:column[+column...] or repeats a table")
            tables[table.strip()] = tuple(c.strip() for c in columns.split("+"))
        return cls(tables)


class ChangeError(ValueError):
    """The event is not a change we can apply; the message is the dead letter's reason."""


def unwrap(payload: Any) -> Any:
    """Raw JSON → the envelope dict (the wrapper's `payload` if wrapped); what is not a JSON
    object is returned unchanged, for the parser to reject with its reason."""
    decoded = payload
    if not isinstance(payload, dict):
        try:
            decoded = json.loads(payload)
        except (ValueError, TypeError):
            return payload
        if not isinstance(decoded, dict):
            return payload
    inner = decoded.get("payload")
    if "op" not in decoded and isinstance(inner, dict):
        return inner
    return decoded


# Kafka Connect schema types → the target column types (io_connectors/change_tables.py). Logical
# types keep their physical type: Debezium timestamps are int64 epochs, Decimal is base64 bytes.
_CONNECT_TYPES = {"int8": "INT64", "int16": "INT64", "int32": "INT64", "int64": "INT64", "float32": "FLOAT64",
                  "float64": "FLOAT64", "boolean": "BOOL", "string": "STRING", "bytes": "STRING",
                  "struct": "JSON", "array": "JSON", "map": "JSON"}


def column_types(decoded: Any) -> dict[str, str]:
    """The column types the Kafka Connect wrapper `{schema, payload}` declares for the row images
    (its `after`, else `before`, struct); {} when there is no usable schema."""
    schema = decoded.get("schema") if isinstance(decoded, dict) else None
    images = {f.get("field"): f for f in schema.get("fields") or () if isinstance(f, dict)} if isinstance(
        schema, dict) else {}
    image = images.get("after") or images.get("before") or {}
    types = {}
    for column in image.get("fields") or ():
        if isinstance(column, dict) and isinstance(column.get("field"), str) and column.get("type") in _CONNECT_TYPES:
            types[column["field"]] = _CONNECT_TYPES[column["type"]]
    return types


def _position(source: Mapping[str, Any]) -> str:
    if source.get("lsn") is not None:
        if source["lsn"] < 0:
            raise ChangeError(f"source.lsn {source['lsn']} is negative")
        return f"L{source['lsn']:020d}"
    if source.get("file") is not None and source.get("pos") is not None:
        if not source["file"].isprintable() or " " in source["file"]:
            raise ChangeError(f"source.file {source['file']!r} is not a binlog file name")
        if source["pos"] < 0 or (source.get("row") or 0) < 0:
            raise ChangeError("source.pos or source.row is negative")
        return f"B{source['file']} {source['pos']:020d}{source.get('row') or 0:010d}"
    if source.get("ts_ms") is not None:
        return f"T{round(source['ts_ms'] * 1000):020d}"
    raise ChangeError("no order position: source has no lsn, no file and pos, no ts_ms")


def to_change(envelope: Mapping[str, Any], keys: PrimaryKeys, origin: str = "",
              types: Optional[Mapping[str, str]] = None) -> dict:
    """A validated envelope (DEBEZIUM_CHANGE_EVENT) → a change; ChangeError says why not.
    `types`: the declared column types (column_types of the wrapper)."""
    op, source = envelope["op"], envelope["source"]
    if op not in OPS:
        raise ChangeError(f"op {op!r} is not one of c, u, d, r")
    table = source["table"]
    problem = identifier_problem(table)
    if problem:
        raise ChangeError(f"field source.table: {problem}")
    key_columns = keys.tables.get(table)
    if key_columns is None:
        raise ChangeError(f"unknown table {table!r}: not in --primary_keys")
    side = "before" if op == "d" else "after"
    image = envelope.get(side)
    if image is None:
        raise ChangeError(f"op {op} without its image: no {side}")
    if not isinstance(image, dict):
        raise ChangeError(f"{side} is not an object")
    key = []
    for column in key_columns:
        value = image.get(column)
        if value is None:
            raise ChangeError(f"no key: {table}.{column} missing from {side}")
        if not isinstance(value, (str, int, float)):
            raise ChangeError(f"key {table}.{column} is a {type(value).__name__}, not a scalar")
        key.append(value)
    event_time = source.get("ts_ms") if source.get("ts_ms") is not None else envelope.get("ts_ms")
    if event_time is None:
        raise ChangeError("no event time: neither source.ts_ms nor ts_ms")
    content = json.dumps([table, op, envelope.get("before"), envelope.get("after")],
                         sort_keys=True, default=str, separators=(",", ":"))
    version = f"{_position(source)}/{OPS[op]}/{hashlib.sha256(content.encode('utf-8')).hexdigest()[:16]}"
    return {
        "change_id": "\x1f".join((table, json.dumps(key), version)),
        "table": table,
        "key": tuple(key),
        "op": op,
        "version": version,
        "image": None if op == "d" else image,
        "types": dict(types or {}),
        "event_time": event_time,
        "origin": origin,
    }


class ParseChangeFn(ParseEventFn):
    """RawRecord → change, or a dead letter naming what is wrong (counted as read / invalid)."""

    def __init__(self, keys: PrimaryKeys, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> None:
        super().__init__(DEBEZIUM_CHANGE_EVENT, "", max_record_bytes)
        self._keys = keys

    def _envelope(self, decoded: Any) -> Any:
        self._types = column_types(decoded)  # of the record being parsed: the wrapper is gone after this
        return unwrap(decoded)

    def _parse(self, record: RawRecord) -> tuple[Optional[dict], Optional[Rejection]]:
        self._types: dict[str, str] = {}
        envelope, letter = super()._parse(record)
        if letter is not None:
            return None, letter
        try:
            return to_change(envelope, self._keys, record.origin, self._types), None
        except ChangeError as err:
            return None, Rejection("parse", str(err), payload_text(record.payload), record.origin,
                                   event_time=_event_time_or_none(envelope))


def _event_time_or_none(envelope: Mapping[str, Any]) -> Optional[float]:
    return envelope["source"].get("ts_ms") or envelope.get("ts_ms")


class ParseChanges(beam.PTransform):
    """RawRecords of Debezium events → {"changes": ..., DEAD_LETTER_TAG: ...}."""

    def __init__(self, keys: PrimaryKeys, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> None:
        super().__init__()
        self._fn = ParseChangeFn(keys, max_record_bytes)

    def expand(self, records: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return records | "Parse" >> beam.ParDo(self._fn).with_outputs(DEAD_LETTER_TAG, main="changes")

