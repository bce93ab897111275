"""Debezium change events → changes: both envelope forms, order positions, and every bad event."""

from __future__ import annotations

import json

import pytest
from apache_beam.testing.util import assert_that, equal_to

from cdc_helpers import event, fixture, line
from kappaflow.core import metrics
from kappaflow.core.records import DEAD_LETTER_TAG, RawRecord
from kappaflow.core.schemas.cdc import DEBEZIUM_CHANGE_EVENT
from transforms.debezium import ChangeError, ParseChanges, PrimaryKeys, to_change, unwrap

KEYS = PrimaryKeys.parse("customers:id,order_lines:order_id+line_no")


def change(envelope) -> dict:
    return to_change(DEBEZIUM_CHANGE_EVENT.parse(unwrap(json.dumps(envelope))), KEYS, "f:1")


def test_primary_keys_parse_composite_and_reject_bad_specs():
    assert KEYS.tables == {"customers": ("id",), "order_lines": ("order_id", "line_no")}
    assert PrimaryKeys.parse(f"{'t' * 63}:{'c' * 63}").tables  # 63 bytes fit
    for bad in ("", "customers", "customers:id,customers:x", "cust-omers:id", "customers:id+id",
                f"{'t' * 64}:id", f"customers:{'c' * 64}"):
        with pytest.raises(ValueError):
            PrimaryKeys.parse(bad)


@pytest.mark.parametrize("connector", ["postgresql", "mysql"])
def test_documentation_examples_parse_in_both_envelope_forms(connector):
    """The fixtures reproduce the create/update/delete examples of Debezium's PostgreSQL and MySQL
    connector documentation, in the Kafka Connect wrapper; the bare envelope is its payload."""
    for name in ("create", "update", "delete"):
        wrapped = fixture(f"{connector}_{name}")
        assert change(wrapped) == change(wrapped["payload"])
    create, update, delete = (change(fixture(f"{connector}_{n}")) for n in ("create", "update", "delete"))
    key = (1,) if connector == "postgresql" else (1004,)
    assert [c["op"] for c in (create, update, delete)] == ["c", "u", "d"]
    assert all(c["key"] == key and c["table"] == "customers" for c in (create, update, delete))
    assert create["image"]["first_name"] == "Anne" and update["image"]["first_name"] == "Anne Marie"
    assert delete["image"] is None
    assert create["version"] < update["version"] < delete["version"]


def test_positions_follow_lsn_then_binlog_then_source_ts():
    pg = change(fixture("postgresql_create"))
    assert pg["version"].startswith("L00000000000024023128/")
    assert pg["event_time"] == pytest.approx(1559033904.863)
    mysql = change(fixture("mysql_update"))
    assert mysql["version"].startswith("Bmysql-bin.000003 00000000000000000484" + "0" * 10 + "/")
    by_time = change(event("u", {"id": 7}, ts_ms=1_767_600_000_123))
    assert by_time["version"].startswith("T00000001767600000123/")
    # The binlog file orders before the position: a later file wins over a larger position.
    early = change(event("u", {"id": 7}, file="mysql-bin.000009", pos=999_999))
    late = change(event("u", {"id": 7}, file="mysql-bin.000010", pos=4))
    assert early["version"] < late["version"]


def test_ties_are_broken_by_op_then_content():
    """The PostgreSQL documentation's create and update share one lsn: the update must win."""
    snapshot = change(event("r", {"id": 1, "v": 1}, lsn=50))
    create = change(event("c", {"id": 1, "v": 1}, lsn=50))
    a, b = change(event("u", {"id": 1, "v": 2}, lsn=50)), change(event("u", {"id": 1, "v": 3}, lsn=50))
    assert snapshot["version"] < create["version"] < min(a["version"], b["version"])
    assert a["version"] != b["version"]
    redelivered = change(event("u", {"id": 1, "v": 2}, lsn=50, wrapped=True))
    assert redelivered["change_id"] == a["change_id"]


def test_composite_keys_keep_the_configured_order():
    c = change(event("c", {"line_no": 2, "order_id": "o1", "qty": 3}, table="order_lines", lsn=9))
    assert c["key"] == ("o1", 2)


@pytest.mark.parametrize("envelope, reason", [
    (event("t", None, lsn=1), "op 't' is not one of c, u, d, r"),
    (event("c", None, lsn=1), "op c without its image: no after"),
    (event("d", None, {"id": 1}, lsn=1) | {"before": None}, "op d without its image: no before"),
    (event("u", {"name": "x"}, lsn=1), "no key: customers.id missing from after"),
    (event("u", {"id": {"a": 1}}, lsn=1), "key customers.id is a dict, not a scalar"),
    (event("u", {"id": 1}, table="invoices", lsn=1), "unknown table 'invoices': not in --primary_keys"),
    (event("u", [1, 2], lsn=1), "after is not an object"),
    (event("c", {"id": 1}, table="t" * 64, lsn=1),
     f"field source.table: '{'t' * 64}' is 64 bytes, longer than the 63 PostgreSQL keeps"),
    (event("c", {"id": 1}, table="bad name", lsn=1), "field source.table: 'bad name' is not a plain identifier"),
])
def test_unusable_events_say_why(envelope, reason):
    with pytest.raises(ChangeError, match="^" + reason.replace("(", r"\(").replace(")", r"\)") + "$"):
        change(envelope)


def test_no_position_no_event_time():
    envelope = event("u", {"id": 1})
    envelope["source"].pop("ts_ms")
    with pytest.raises(ChangeError, match="no order position"):
        change(envelope)
    envelope.pop("ts_ms")
    with pytest.raises(ChangeError, match="no event time"):
        change(envelope)


def test_parse_changes_routes_every_record(run_batch, count_of):
    records = [
        RawRecord(line(fixture("postgresql_create")), "in:1"),
        RawRecord(line(fixture("mysql_delete")["payload"]), "in:2"),
        RawRecord(b'{"before": null, "after": {"id": 1', "in:3"),  # truncated
        RawRecord(line({"before": None, "after": {"id": 1}, "source": {"table": "customers"}}), "in:4"),
        RawRecord(b"null", "in:5"),  # a Kafka tombstone message: nothing to apply
        RawRecord(line(event("c", {"id": 2}, table="invoices", lsn=3)), "in:6"),
    ]

    def build(p):
        import apache_beam as beam

        out = p | beam.Create(records) | ParseChanges(KEYS)
        assert_that(out.changes | "Ops" >> beam.Map(lambda c: (c["origin"], c["op"], c["key"])),
                    equal_to([("in:1", "c", (1,)), ("in:2", "d", (1004,))]), label="Changes")
        assert_that(out[DEAD_LETTER_TAG] | "Reasons" >> beam.Map(lambda r: (r.origin, r.stage, r.reason)),
                    equal_to([
                        ("in:3", "parse", "bad JSON: Expecting ',' delimiter: line 1 column 35 (char 34)"),
                        ("in:4", "parse", "field op: is required but missing"),
                        ("in:5", "parse", "field <record>: expected a JSON object, got NoneType"),
                        ("in:6", "parse", "unknown table 'invoices': not in --primary_keys"),
                    ]), label="DeadLetters")

    result = run_batch(build)
    assert count_of(result, metrics.READ) == 6
    assert count_of(result, metrics.INVALID) == 4
