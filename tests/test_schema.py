"""Schema: timestamp parsing, record validation, and the SQL / BigQuery / Avro / Arrow schemas."""

from __future__ import annotations

import datetime as dt
import io

import fastavro
import pyarrow as pa
import pytest
import sqlalchemy as sa

from kappaflow.core.records import DEAD_LETTER_SCHEMA
from kappaflow.core.schema import (
    Field, FieldType, Schema, ValidationError, format_timestamp, parse_timestamp,
)
from transforms.parse import PiiHasher

T0 = 1704067200.0  # 2024-01-01T00:00:00Z

ORDER = Schema(
    name="orders",
    description="An order.",
    key=("order_id",),
    partition_field="created_at",
    fields=(
        Field("order_id", FieldType.STRING, required=True, description="Order id."),
        Field("quantity", FieldType.INT64),
        Field("price", FieldType.FLOAT64, description="Unit price."),
        Field("paid", FieldType.BOOL),
        Field("created_at", FieldType.TIMESTAMP, required=True),
        Field("customer", FieldType.RECORD, fields=(
            Field("email", FieldType.STRING, required=True, pii=True),
            Field("age", FieldType.INT64),
        )),
        Field("attrs", FieldType.JSON),
    ),
)

VALID = {
    "order_id": "o-1", "quantity": 2, "price": 9.5, "paid": True, "created_at": "2024-01-01T00:00:00Z",
    "customer": {"email": "ann@example.com", "age": 40, "ignored": "extra keys are dropped"},
    "attrs": {"coupon": "X"},
}


# -- parse_timestamp -----------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("2024-01-01T00:00:00Z", T0),
    ("2024-01-01T02:00:00+02:00", T0),
    ("2023-12-31T19:00:00-05:00", T0),
    ("2024-01-01T00:00:00.250Z", T0 + 0.25),
    (1704067200, T0),
    (1704067200.5, T0 + 0.5),
    (1704067200123, T0 + 0.123),             # epoch milliseconds
    (1704067200123456, T0 + 0.123456),       # epoch microseconds
    ("1704067200", T0),
    (" 1704067200.5 ", T0 + 0.5),
    ("1704067200123", T0 + 0.123),
    (0, 0.0),
    (dt.datetime(2024, 1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1))), T0),
])
def test_parse_timestamp_accepts(value, expected):
    assert parse_timestamp(value) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("value", [
    "2024-01-01T00:00:00",        # naive: zone unknown
    "2024-01-01 00:00:00",
    dt.datetime(2024, 1, 1),
    "yesterday", "", "   ", "nan", "inf",
    True, False,
    -1, -0.5, "-5",
    float("nan"), float("inf"),
    None, [T0], {"t": T0},
])
def test_parse_timestamp_rejects(value):
    with pytest.raises(ValueError):
        parse_timestamp(value)


@pytest.mark.parametrize("value", [
    1e20, 1e308, 2**70, 10**400, -(2**70), "1e20", "1e400",   # beyond what any runner holds
    "1969-12-31T23:59:59Z", "1970-01-01T00:30:00+01:00",      # before the epoch, with or without offset
    "9999-12-31T23:59:59-00:01", "0001-01-01T00:00:00+14:00",
])
def test_parse_timestamp_rejects_times_outside_1970_to_9999(value):
    with pytest.raises(ValueError, match="timestamp"):
        parse_timestamp(value)


def test_parse_timestamp_keeps_microseconds_and_cuts_nanoseconds():
    micros = parse_timestamp("2024-01-15T12:03:07.123456+02:00")
    assert format_timestamp(micros) == "2024-01-15T10:03:07.123456Z"
    assert format_timestamp(parse_timestamp("2024-01-15T10:03:07.123456789Z")) == "2024-01-15T10:03:07.123456Z"
    assert format_timestamp(parse_timestamp("9999-12-31T23:59:59Z")) == "9999-12-31T23:59:59.000000Z"
    with pytest.raises(ValueError, match="outside"):  # would round up to year 10000
        parse_timestamp("9999-12-31T23:59:59.9999999Z")


def test_integers_must_fit_in_64_bits_and_reasons_stay_short():
    schema = Schema("s", (Field("n", FieldType.INT64), Field("x", FieldType.FLOAT64)))
    assert schema.parse({"n": 2**63 - 1})["n"] == 2**63 - 1
    for value in (2**63, -(2**63) - 1, 1e300, "9" * 5000):
        with pytest.raises(ValidationError, match="field n|^n:") as err:
            schema.parse({"n": value})
        assert len(str(err.value)) < 200
    with pytest.raises(ValidationError, match="finite"):
        schema.parse({"x": 10**400})


def test_max_abs_bounds_a_float_field():
    schema = Schema("s", (Field("price", FieldType.FLOAT64, max_abs=1e12),))
    assert schema.parse({"price": -1e12}) == {"price": -1e12}
    with pytest.raises(ValidationError, match=r"price: 1e\+308 is beyond ±1e\+12"):
        schema.parse({"price": 1e308})
    with pytest.raises(ValueError, match="max_abs"):
        Field("n", FieldType.INT64, max_abs=1.0)


def test_integer_as_text_accepts_an_integer_for_a_string_field():
    schema = Schema("s", (Field("line", FieldType.STRING, integer_as_text=True),))
    assert schema.parse({"line": 1}) == {"line": "1"}
    assert schema.parse({"line": "line-1"}) == {"line": "line-1"}
    for value in (True, 1.5, [1]):
        with pytest.raises(ValidationError, match="line"):
            schema.parse({"line": value})
    with pytest.raises(ValueError, match="only STRING"):
        Field("n", FieldType.INT64, integer_as_text=True)


def test_format_timestamp():
    assert format_timestamp(T0) == "2024-01-01T00:00:00.000000Z"
    assert format_timestamp(T0 + 0.5) == "2024-01-01T00:00:00.500000Z"
    assert parse_timestamp(format_timestamp(T0 + 0.123)) == pytest.approx(T0 + 0.123, abs=1e-6)


# -- Schema.parse ----------------------------------------------------------------------------------

def test_parse_valid_record():
    out = ORDER.parse(VALID, hash_pii=lambda s: f"h({s})")
    assert out == {
        "order_id": "o-1", "quantity": 2, "price": 9.5, "paid": True, "created_at": T0,
        "customer": {"email": "h(ann@example.com)", "age": 40}, "attrs": {"coupon": "X"},
    }


def test_parse_optional_fields_default_to_none():
    out = ORDER.parse({"order_id": "o-2", "created_at": T0, "quantity": "", "customer": None})
    assert out == {"order_id": "o-2", "quantity": None, "price": None, "paid": None,
                   "created_at": T0, "customer": None, "attrs": None}


def test_pii_is_hashed_with_a_salted_hmac():
    hashed = ORDER.parse(VALID, hash_pii=PiiHasher("salt"))["customer"]["email"]
    assert hashed != "ann@example.com" and len(hashed) == 32
    assert hashed == ORDER.parse(VALID, hash_pii=PiiHasher("salt"))["customer"]["email"]
    assert hashed != ORDER.parse(VALID, hash_pii=PiiHasher("pepper"))["customer"]["email"]
    assert ORDER.pii_paths() == [("customer", "email")]


def test_numeric_strings_are_accepted_for_numbers():
    out = ORDER.parse({**VALID, "quantity": " 12 ", "price": "12.5", "paid": "FALSE",
                       "created_at": "1704067200", "customer": {"email": "a", "age": "7"}})
    assert (out["quantity"], out["price"], out["paid"], out["created_at"], out["customer"]["age"]) == (
        12, 12.5, False, T0, 7)
    assert ORDER.parse({**VALID, "quantity": 3.0, "price": 4})["quantity"] == 3
    assert isinstance(ORDER.parse({**VALID, "price": 4})["price"], float)


@pytest.mark.parametrize("missing, path", [
    ("order_id", "order_id"),
    ("created_at", "created_at"),
])
def test_required_field_missing(missing, path):
    record = {k: v for k, v in VALID.items() if k != missing}
    with pytest.raises(ValidationError) as info:
        ORDER.parse(record)
    assert info.value.field == path
    assert "required" in info.value.reason


def test_required_nested_field_missing_names_dotted_path():
    with pytest.raises(ValidationError) as info:
        ORDER.parse({**VALID, "customer": {"age": 3}})
    assert info.value.field == "customer.email"
    assert str(info.value).startswith("customer.email: ")


@pytest.mark.parametrize("override, path, reason", [
    ({"quantity": "twelve"}, "quantity", "integer"),     # string where int
    ({"quantity": 1.5}, "quantity", "integer"),
    ({"quantity": True}, "quantity", "boolean"),
    ({"price": "twelve"}, "price", "number"),
    ({"price": "NaN"}, "price", "finite"),
    ({"price": [1]}, "price", "number"),
    ({"order_id": 123}, "order_id", "string"),          # int for string
    ({"paid": "yes"}, "paid", "boolean"),
    ({"paid": 1}, "paid", "boolean"),
    ({"created_at": "2024-01-01T00:00:00"}, "created_at", "UTC offset"),
    ({"created_at": "soon"}, "created_at", "unparseable"),
    ({"customer": "ann@example.com"}, "customer", "object"),
    ({"customer": {"email": "a", "age": "old"}}, "customer.age", "integer"),
    ({"customer": {"email": 5}}, "customer.email", "string"),
])
def test_wrong_types_name_the_field(override, path, reason):
    with pytest.raises(ValidationError) as info:
        ORDER.parse({**VALID, **override})
    assert info.value.field == path
    assert reason in info.value.reason


def test_parse_rejects_non_objects():
    with pytest.raises(ValidationError) as info:
        ORDER.parse(["o-1"])
    assert info.value.field == "<record>"


def test_schema_declaration_errors():
    with pytest.raises(ValueError):
        Field("bad name", FieldType.STRING)
    with pytest.raises(ValueError):
        Field("r", FieldType.RECORD)
    with pytest.raises(ValueError):
        Field("s", FieldType.STRING, fields=(Field("x", FieldType.STRING),))
    with pytest.raises(ValueError):
        Schema("s", (Field("a", FieldType.STRING), Field("a", FieldType.INT64)))
    with pytest.raises(ValueError):
        Schema("s", (Field("a", FieldType.STRING),), key=("b",))


# -- SQL -----------------------------------------------------------------------------------------

def test_sqlalchemy_table_keys_and_nullability():
    table = ORDER.sqlalchemy_table(sa.MetaData())
    assert table.name == "orders"
    assert [c.name for c in table.primary_key.columns] == ["order_id"]
    assert not table.c.order_id.nullable and not table.c.created_at.nullable
    assert table.c.quantity.nullable and table.c.customer.nullable
    assert ORDER.sqlalchemy_table(sa.MetaData(), "other").name == "other"

    composite = Schema("m", (Field("a", FieldType.TIMESTAMP), Field("b", FieldType.STRING),
                             Field("v", FieldType.INT64)), key=("a", "b"))
    table = composite.sqlalchemy_table(sa.MetaData())
    assert [c.name for c in table.primary_key.columns] == ["a", "b"]
    assert not table.c.a.nullable  # key columns are NOT NULL even when not declared required


def test_sqlite_round_trip_stores_iso_text_with_z(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'orders.db'}")
    metadata = sa.MetaData()
    table = ORDER.sqlalchemy_table(metadata)
    metadata.create_all(engine)
    row = ORDER.parse(VALID, hash_pii=PiiHasher("s"))
    second = {**row, "order_id": "o-2", "created_at": T0 + 0.5, "customer": None}
    with engine.begin() as conn:
        conn.execute(table.insert(), [row, second])
    with engine.connect() as conn:
        raw = dict(conn.exec_driver_sql("SELECT order_id, created_at FROM orders").all())
        loaded = {r.order_id: r for r in conn.execute(sa.select(table))}
    assert raw == {"o-1": "2024-01-01T00:00:00.000000Z", "o-2": "2024-01-01T00:00:00.500000Z"}
    assert loaded["o-1"].created_at == T0 and loaded["o-2"].created_at == T0 + 0.5
    assert loaded["o-1"].customer == row["customer"] and loaded["o-1"].attrs == {"coupon": "X"}
    assert loaded["o-1"].quantity == 2 and loaded["o-1"].paid is True
    engine.dispose()


def test_sqlite_timestamp_text_sorts_chronologically(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'orders.db'}")
    metadata = sa.MetaData()
    table = ORDER.sqlalchemy_table(metadata)
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"order_id": "later", "created_at": T0 + 0.5},
                                      {"order_id": "earlier", "created_at": T0}])
    with engine.connect() as conn:
        ordered = conn.execute(sa.select(table.c.order_id).order_by(table.c.created_at)).scalars().all()
        after = conn.execute(sa.select(table.c.order_id).where(table.c.created_at > T0)).scalars().all()
    engine.dispose()
    assert ordered == ["earlier", "later"]
    assert after == ["later"]


# -- BigQuery, Avro, Arrow -----------------------------------------------------------------------

def test_bigquery_schema():
    fields = ORDER.bigquery_schema()
    assert fields[0] == {"name": "order_id", "type": "STRING", "mode": "REQUIRED", "description": "Order id."}
    assert fields[1] == {"name": "quantity", "type": "INT64", "mode": "NULLABLE"}
    assert fields[2] == {"name": "price", "type": "FLOAT64", "mode": "NULLABLE", "description": "Unit price."}
    assert [(f["name"], f["type"], f["mode"]) for f in fields[3:]] == [
        ("paid", "BOOL", "NULLABLE"), ("created_at", "TIMESTAMP", "REQUIRED"),
        ("customer", "RECORD", "NULLABLE"), ("attrs", "JSON", "NULLABLE")]
    assert fields[5]["fields"] == [
        {"name": "email", "type": "STRING", "mode": "REQUIRED"},
        {"name": "age", "type": "INT64", "mode": "NULLABLE"}]


def test_avro_schema_parses_and_round_trips_a_row():
    parsed = fastavro.parse_schema(ORDER.avro_schema())
    row = ORDER.parse(VALID, hash_pii=PiiHasher("s"))
    empty = ORDER.parse({"order_id": "o-2", "created_at": T0 + 1.5})
    buffer = io.BytesIO()
    fastavro.writer(buffer, parsed, [ORDER.to_storage_row(row), ORDER.to_storage_row(empty)])
    buffer.seek(0)
    back = list(fastavro.reader(buffer))
    assert back[0]["created_at"] == dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    assert back[0]["attrs"] == '{"coupon": "X"}'
    assert back[0]["customer"] == row["customer"]
    assert {k: back[0][k] for k in ("order_id", "quantity", "price", "paid")} == {
        "order_id": "o-1", "quantity": 2, "price": 9.5, "paid": True}
    assert back[1]["created_at"].timestamp() == T0 + 1.5 and back[1]["customer"] is None


@pytest.mark.parametrize("schema", [DEAD_LETTER_SCHEMA, ORDER])
def test_avro_schema_of_declared_schemas_is_valid(schema):
    avro = schema.avro_schema()
    fastavro.parse_schema(avro)
    assert [f["name"] for f in avro["fields"]] == list(schema.field_names)


def test_arrow_schema_builds_a_table():
    schema = ORDER.arrow_schema()
    assert schema.field("created_at").type == pa.timestamp("us", tz="UTC")
    assert not schema.field("order_id").nullable and schema.field("quantity").nullable
    assert schema.field("customer").type == pa.struct([pa.field("email", pa.string(), nullable=False),
                                                       pa.field("age", pa.int64())])
    row = ORDER.parse(VALID, hash_pii=PiiHasher("s"))
    table = pa.Table.from_pylist([ORDER.to_storage_row(row)], schema=schema)
    assert table.num_rows == 1
    back = table.to_pylist()[0]
    assert back["created_at"] == dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    assert back["customer"] == row["customer"] and back["attrs"] == '{"coupon": "X"}'


NESTED = Schema("nested", (
    Field("id", FieldType.STRING, required=True),
    Field("meta", FieldType.RECORD, fields=(Field("seen_at", FieldType.TIMESTAMP),
                                            Field("extra", FieldType.JSON))),
))


def test_storage_row_converts_nested_timestamp_and_json():
    row = NESTED.parse({"id": "a", "meta": {"seen_at": "2024-01-01T00:00:00Z", "extra": {"k": [1]}}})
    stored = NESTED.to_storage_row(row)
    buffer = io.BytesIO()
    fastavro.writer(buffer, fastavro.parse_schema(NESTED.avro_schema()), [stored])
    buffer.seek(0)
    assert list(fastavro.reader(buffer))[0]["meta"] == {
        "seen_at": dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), "extra": '{"k": [1]}'}
    assert pa.Table.from_pylist([stored], schema=NESTED.arrow_schema()).num_rows == 1
