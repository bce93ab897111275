"""Schema declarations: one declaration per record type drives parsing, validation, SQL DDL,
BigQuery, Avro and Parquet schemas.

Values are kept as plain Python values inside the pipeline (dicts are cheap to pickle and to
combine); TIMESTAMP values are float seconds since the epoch, UTC.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import math
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import sqlalchemy as sa

__all__ = [
    "FieldType",
    "Field",
    "Schema",
    "ValidationError",
    "parse_timestamp",
    "format_timestamp",
    "coerce_value",
    "sql_type",
]


class FieldType(str, enum.Enum):
    STRING = "STRING"
    INT64 = "INT64"
    FLOAT64 = "FLOAT64"
    BOOL = "BOOL"
    TIMESTAMP = "TIMESTAMP"
    RECORD = "RECORD"
    JSON = "JSON"  # free-form object, stored as JSON text in SQL, Avro and Parquet


class ValidationError(ValueError):
    """A record failed validation; `field` names the offending field (dotted path)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


# Epoch values above this are milliseconds: 1e11 seconds is the year 5138, 1e11 ms is 1973.
_EPOCH_MS_THRESHOLD = 1e11
_EPOCH_US_THRESHOLD = 1e14
# The instants every part of a run can hold: 1970-01-01 up to 9999-12-31T23:59:59 UTC. Python's
# datetime (ISO text, SQL) ends there; Beam's Timestamp reaches further, to ~year 294247. (No
# fraction of the last second: a float rounds 253402300799.9999 up to year 10000.)
# Earlier or later is rejected, not clamped: a time that far off is not a time.
MIN_EPOCH_SECONDS = 0.0
MAX_EPOCH_SECONDS = 253402300799.0
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def parse_timestamp(value: Any) -> float:
    """ISO-8601 with `Z` or an offset, or epoch seconds/milliseconds → epoch seconds (UTC).

    Naive ISO strings are rejected: guessing a zone silently shifts whole windows. So is any time
    before 1970 or after 9999 (MIN/MAX_EPOCH_SECONDS), whatever its form.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a timestamp, got boolean {value!r}")
    if isinstance(value, (int, float)):
        try:
            return _epoch_number(float(value))
        except OverflowError:  # an int beyond float's range (10**400)
            raise ValueError(f"timestamp {short_repr(value)} is not a valid epoch time") from None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("empty timestamp")
        if "T" not in text and ":" not in text:  # ISO text has one or both; a number neither
            try:
                return _epoch_number(float(text))
            except ValueError:
                pass
        try:  # Python 3.11+: `Z`, offsets, and fractions longer than microseconds (cut to them)
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"unparseable timestamp {short_repr(value)}") from None
        if parsed.tzinfo is None:
            raise ValueError(f"timestamp {short_repr(value)} has no UTC offset (use Z or +HH:MM)")
        return _in_range(parsed.timestamp(), value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("datetime without a time zone")
        return _in_range(value.timestamp(), value)
    raise ValueError(f"expected a timestamp, got {type(value).__name__}")


def _epoch_number(number: float) -> float:
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"timestamp {number!r} is not a valid epoch time")
    if number >= _EPOCH_US_THRESHOLD:
        seconds = number / 1e6
    elif number >= _EPOCH_MS_THRESHOLD:
        seconds = number / 1e3
    else:
        seconds = number
    return _in_range(seconds, number)


def _in_range(seconds: float, value: Any) -> float:
    if not MIN_EPOCH_SECONDS <= seconds <= MAX_EPOCH_SECONDS:
        raise ValueError(f"timestamp {short_repr(value)} is outside 1970-01-01..9999-12-31 UTC")
    return seconds


def short_repr(value: Any, limit: int = 80) -> str:
    """repr() cut to `limit` characters: reasons quote values, and a value may be a megabyte."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} chars)"


def format_timestamp(seconds: float) -> str:
    """Epoch seconds → ISO-8601 UTC text with a `Z`; fixed width (microseconds), so text sorts as time."""
    moment = dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def to_datetime(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc)


class UtcTimestamp(sa.types.TypeDecorator):
    """UTC instant: ISO-8601 text on SQLite (sortable, readable), a timezone-aware type elsewhere."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.engine.Dialect) -> sa.types.TypeEngine:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(32))
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: Any, dialect: sa.engine.Dialect) -> Any:
        if value is None:
            return None
        seconds = parse_timestamp(value)
        return format_timestamp(seconds) if dialect.name == "sqlite" else to_datetime(seconds)

    def process_result_value(self, value: Any, dialect: sa.engine.Dialect) -> Any:
        if value is None:
            return None
        return parse_timestamp(value)


@dataclasses.dataclass(frozen=True)
class Field:
    name: str
    type: FieldType
    required: bool = False
    description: str = ""
    fields: tuple["Field", ...] = ()  # sub-fields of a RECORD; extra keys in the input are ignored
    pii: bool = False  # replaced by a salted hash when parsed, redacted in dead-letter payloads
    # STRING fields only: an integer is accepted too and kept as its decimal text (1 → "1"), for
    # names that some senders spell as numbers.
    integer_as_text: bool = False
    # FLOAT64 fields only: values of a larger magnitude are rejected, for fields that get summed
    # (two prices of 1e308 overflow any float sum).
    max_abs: Optional[float] = None

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"field name {self.name!r} is not an identifier")
        if (self.type is FieldType.RECORD) != bool(self.fields):
            raise ValueError(f"field {self.name!r}: RECORD fields, and only they, have sub-fields")
        if self.integer_as_text and self.type is not FieldType.STRING:
            raise ValueError(f"field {self.name!r}: only STRING fields take integer_as_text")
        if self.max_abs is not None and (self.type is not FieldType.FLOAT64 or not 0 < self.max_abs < math.inf):
            raise ValueError(f"field {self.name!r}: max_abs is a positive finite bound of a FLOAT64 field")


@dataclasses.dataclass(frozen=True)
class Schema:
    """A record type: its fields, the key that identifies a row, and how the warehouse lays it out."""

    name: str
    fields: tuple[Field, ...]
    description: str = ""
    key: tuple[str, ...] = ()
    partition_field: Optional[str] = None  # BigQuery DATE() partitioning, file partitioning
    cluster_fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"schema {self.name}: duplicate field names")
        for name in (*self.key, *self.cluster_fields, *filter(None, [self.partition_field])):
            if name not in names:
                raise ValueError(f"schema {self.name}: unknown field {name!r}")

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def check_filled_by(self, columns: Iterable[str], producer: str) -> None:
        """Raise ValueError unless `columns` (what `producer` writes) fill every field of this table:
        a metric renamed on one side only fails the graph's construction, not a column at run time.
        Other columns may ride along for later steps; the sinks write the declared fields only."""
        missing = [name for name in self.field_names if name not in set(columns)]
        if missing:
            raise ValueError(f"{producer} does not produce {', '.join(missing)} of table {self.name}")

    # -- parsing -------------------------------------------------------------------------------

    def parse(self, record: Mapping[str, Any], hash_pii: Callable[[str], str] = str) -> dict:
        """Validate and convert one decoded record; raises ValidationError naming the field."""
        if type(record) is not dict and not isinstance(record, Mapping):
            raise ValidationError("<record>", f"expected a JSON object, got {type(record).__name__}")
        return _parse_fields(self.fields, record, "", hash_pii)

    def pii_paths(self) -> list[tuple[str, ...]]:
        return list(_pii_paths(self.fields, ()))

    # -- generated schemas ---------------------------------------------------------------------

    def sqlalchemy_table(self, metadata: sa.MetaData, name: Optional[str] = None) -> sa.Table:
        """Flat SQL table; the key becomes the primary key so that writes can be upserts."""
        columns = [
            sa.Column(
                f.name,
                _SQL_TYPES[f.type](),
                primary_key=f.name in self.key,
                nullable=not (f.required or f.name in self.key),
                comment=f.description or None,
            )
            for f in self.fields
        ]
        return sa.Table(name or self.name, metadata, *columns, comment=self.description or None)

    def bigquery_schema(self) -> list[dict]:
        """BigQuery JSON schema (the `schema.fields` of a tables.insert request)."""
        return [_bq_field(f) for f in self.fields]

    def avro_schema(self) -> dict:
        return {
            "type": "record",
            "name": self.name,
            "namespace": "kappaflow",
            "doc": self.description,
            "fields": [_avro_field(f, self.name) for f in self.fields],
        }

    def arrow_schema(self) -> Any:
        import pyarrow as pa  # imported lazily: only file sinks need it

        return pa.schema([_arrow_field(f) for f in self.fields])

    # -- conversions for sinks ---------------------------------------------------------------

    def to_storage_row(self, row: Mapping[str, Any]) -> dict:
        """Row as Avro/Parquet store it: timestamps as aware datetimes, JSON as text."""
        return _storage_row(self.fields, row)


def _storage_row(fields: Sequence[Field], row: Mapping[str, Any]) -> dict:
    out = {}
    for f in fields:
        value = row.get(f.name)
        if value is not None:
            if f.type is FieldType.TIMESTAMP:
                value = to_datetime(value)
            elif f.type is FieldType.JSON:
                value = json.dumps(value, sort_keys=True)
            elif f.type is FieldType.RECORD:
                value = _storage_row(f.fields, value)
        out[f.name] = value
    return out


_SQL_TYPES: dict[FieldType, Callable[[], sa.types.TypeEngine]] = {
    FieldType.STRING: sa.Text,
    FieldType.INT64: sa.BigInteger,
    FieldType.FLOAT64: lambda: sa.Float(precision=53),
    FieldType.BOOL: sa.Boolean,
    FieldType.TIMESTAMP: UtcTimestamp,
    FieldType.RECORD: sa.JSON,
    FieldType.JSON: sa.JSON,
}


def sql_type(field_type: FieldType) -> sa.types.TypeEngine:
    """The SQL column type of a field type (what `Schema.sqlalchemy_table` uses)."""
    return _SQL_TYPES[field_type]()


def coerce_value(field_type: FieldType, value: Any) -> Any:
    """One non-null value → `field_type` by the parser's rules (no PII hashing); ValueError if it
    does not fit. For tables whose columns are only known at run time."""
    if field_type is FieldType.RECORD:
        raise ValueError("a RECORD needs its sub-fields: use Schema.parse")
    try:
        return _parse_value(_VALUE_FIELDS[field_type], value, "", str)
    except ValidationError as err:
        raise ValueError(err.reason) from None


_VALUE_FIELDS = {t: Field("value", t) for t in FieldType if t is not FieldType.RECORD}


# How _parse_fields treats a field's value, worked out once per field list (_plan).
_PLAIN, _PII, _TIME, _NESTED, _OTHER = range(5)

# fields (by identity) → (fields, plan): the tuple is kept so that its id stays its own.
_PLANS: dict[int, tuple[Sequence[Field], tuple[tuple[str, bool, int, Field], ...]]] = {}


def _kind(f: Field) -> int:
    if f.type is FieldType.STRING:
        return _PII if f.pii else _PLAIN
    return {FieldType.TIMESTAMP: _TIME, FieldType.RECORD: _NESTED}.get(f.type, _OTHER)


def _plan(fields: Sequence[Field]) -> tuple[tuple[str, bool, int, Field], ...]:
    """Per field: its name, whether it is required, and its kind (above)."""
    found = _PLANS.get(id(fields))
    if found is None or found[0] is not fields:
        found = _PLANS[id(fields)] = (fields, tuple((f.name, f.required, _kind(f), f) for f in fields))
    return found[1]


def _parse_fields(
    fields: Sequence[Field], record: Mapping[str, Any], prefix: str, hash_pii: Callable[[str], str]
) -> dict:
    # The hot loop of every pipeline: the usual value of the commonest kinds (a string, an ISO
    # time, an object) is converted here, without a call to _parse_value, and a field's dotted
    # path is only spelled out for an error.
    out: dict[str, Any] = {}
    for name, required, kind, f in _plan(fields):
        value = record.get(name)
        if value is None or value == "":
            if required:
                raise ValidationError(prefix + name, "is required but missing")
            out[name] = None
        elif type(value) is str and kind <= _PII:
            out[name] = value if kind == _PLAIN else hash_pii(value)
        elif kind == _TIME:
            try:
                out[name] = parse_timestamp(value)
            except (TypeError, ValueError) as err:
                raise ValidationError(prefix + name, str(err)) from None
        elif kind == _NESTED and type(value) is dict:
            out[name] = _parse_fields(f.fields, value, f"{prefix}{name}.", hash_pii)
        else:
            out[name] = _parse_value(f, value, prefix, hash_pii)
    return out


def _parse_value(f: Field, value: Any, prefix: str, hash_pii: Callable[[str], str]) -> Any:
    t = f.type
    try:
        if t is FieldType.STRING:
            if type(value) is not str:
                if f.integer_as_text and isinstance(value, int) and not isinstance(value, bool):
                    value = str(_to_int(value))
                if not isinstance(value, str):
                    raise ValueError(f"expected a string, got {type(value).__name__} {short_repr(value)}")
            return hash_pii(value) if f.pii else value
        if t is FieldType.INT64:
            return _to_int(value)
        if t is FieldType.FLOAT64:
            number = _to_float(value)
            if f.max_abs is not None and abs(number) > f.max_abs:
                raise ValueError(f"{short_repr(value)} is beyond ±{f.max_abs:g}")
            return number
        if t is FieldType.BOOL:
            return _to_bool(value)
        if t is FieldType.TIMESTAMP:
            return parse_timestamp(value)
        if t is FieldType.RECORD:
            if type(value) is not dict and not isinstance(value, Mapping):
                raise ValueError(f"expected an object, got {type(value).__name__}")
            return _parse_fields(f.fields, value, prefix + f.name + ".", hash_pii)
        if t is FieldType.JSON:
            return value
    except ValidationError:
        raise
    except (TypeError, ValueError) as err:
        raise ValidationError(prefix + f.name, str(err)) from None
    raise AssertionError(t)


def _to_int(value: Any) -> int:
    # Numbers that arrive as text (CSV cells) are accepted; other types are not guessed at.
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got boolean {value!r}")
    number = None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:  # also: more digits than Python converts
            pass
    if number is None:
        raise ValueError(f"expected an integer, got {type(value).__name__} {short_repr(value)}")
    if not INT64_MIN <= number <= INT64_MAX:  # what SQL BIGINT, BigQuery and Avro hold
        raise ValueError(f"integer {short_repr(value)} does not fit in 64 bits")
    return number


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got boolean {value!r}")
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:
            raise ValueError(f"expected a finite number, got {short_repr(value)}") from None
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError(f"expected a number, got string {short_repr(value)}") from None
    else:
        raise ValueError(f"expected a number, got {type(value).__name__} {short_repr(value)}")
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {short_repr(value)}")
    return number


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"expected a boolean, got {type(value).__name__} {short_repr(value)}")


def _pii_paths(fields: Iterable[Field], prefix: tuple[str, ...]) -> Iterable[tuple[str, ...]]:
    for f in fields:
        if f.pii:
            yield (*prefix, f.name)
        if f.fields:
            yield from _pii_paths(f.fields, (*prefix, f.name))


_BQ_TYPES = {
    FieldType.STRING: "STRING",
    FieldType.INT64: "INT64",
    FieldType.FLOAT64: "FLOAT64",
    FieldType.BOOL: "BOOL",
    FieldType.TIMESTAMP: "TIMESTAMP",
    FieldType.RECORD: "RECORD",
    FieldType.JSON: "JSON",
}


def _bq_field(f: Field) -> dict:
    out: dict[str, Any] = {
        "name": f.name,
        "type": _BQ_TYPES[f.type],
        "mode": "REQUIRED" if f.required else "NULLABLE",
    }
    if f.description:
        out["description"] = f.description
    if f.fields:
        out["fields"] = [_bq_field(sub) for sub in f.fields]
    return out


_AVRO_TYPES: dict[FieldType, Any] = {
    FieldType.STRING: "string",
    FieldType.INT64: "long",
    FieldType.FLOAT64: "double",
    FieldType.BOOL: "boolean",
    FieldType.TIMESTAMP: {"type": "long", "logicalType": "timestamp-micros"},
    FieldType.JSON: "string",
}


def _avro_field(f: Field, parent: str) -> dict:
    if f.type is FieldType.RECORD:
        name = f"{parent}_{f.name}"
        avro_type: Any = {
            "type": "record",
            "name": name,
            "fields": [_avro_field(sub, name) for sub in f.fields],
        }
    else:
        avro_type = _AVRO_TYPES[f.type]
    if f.required:
        return {"name": f.name, "type": avro_type, "doc": f.description}
    return {"name": f.name, "type": ["null", avro_type], "default": None, "doc": f.description}


def _arrow_field(f: Field) -> Any:
    import pyarrow as pa

    types = {
        FieldType.STRING: pa.string(),
        FieldType.INT64: pa.int64(),
        FieldType.FLOAT64: pa.float64(),
        FieldType.BOOL: pa.bool_(),
        FieldType.TIMESTAMP: pa.timestamp("us", tz="UTC"),
        FieldType.JSON: pa.string(),
    }
    if f.type is FieldType.RECORD:
        arrow_type = pa.struct([_arrow_field(sub) for sub in f.fields])
    else:
        arrow_type = types[f.type]
    return pa.field(f.name, arrow_type, nullable=not f.required)
