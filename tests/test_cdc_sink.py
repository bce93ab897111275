"""Applying changes to target tables: order, re-deliveries, tombstones, schema evolution, conflicts.

The apply code runs against a real (in-memory) SQLite database; the property test drives it
directly, without a Beam pipeline per example.
"""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from cdc_helpers import event, fixture
from io_connectors.cdc_sink import Outcome, apply_changes
from io_connectors.change_tables import DELETED, VERSION, ChangeTables
from kappaflow.core.schemas.cdc import DEBEZIUM_CHANGE_EVENT
from kappaflow.core.sql import create_engine
from kappaflow.tables import read_change_table
from transforms.debezium import ParseChangeFn, PrimaryKeys, column_types, to_change, unwrap
from kappaflow.core.records import RawRecord

KEYS = PrimaryKeys.parse("customers:id,order_lines:order_id+line_no")


def change(envelope: dict) -> dict:
    return to_change(DEBEZIUM_CHANGE_EVENT.parse(unwrap(json.dumps(envelope))), KEYS, "test")


class Target:
    """An in-memory database (or the one at `url`) and the apply code, batch by batch."""

    def __init__(self, url: str = "sqlite://") -> None:
        self.engine = create_engine(url)
        self.tables = ChangeTables(self.engine, KEYS)
        self.outcome = Outcome()

    def apply(self, *changes: dict, table: str = "customers") -> Outcome:
        outcome = apply_changes(self.engine, self.tables, table, list(changes))
        for name in ("applied", "superseded", "duplicates", "rejected"):
            getattr(self.outcome, name).extend(getattr(outcome, name))
        return outcome

    def rows(self, table: str = "customers") -> dict:
        return read_change_table(self.engine, table)

    def live(self, table: str = "customers") -> dict:
        return {k: {c: v for c, v in r.items() if not c.startswith("_cdc_")}
                for k, r in self.rows(table).items() if not r[DELETED]}


def test_documentation_examples_end_in_tombstones_in_any_order():
    """The PostgreSQL and MySQL documentation examples: create, update, delete of one customer."""
    for connector, key in (("postgresql", 1), ("mysql", 1004)):
        create, update, delete = (change(fixture(f"{connector}_{n}")) for n in ("create", "update", "delete"))
        forward, backward = Target(), Target()
        for c in (create, update):
            forward.apply(c)
        assert forward.live() == {(key,): {"id": key, "first_name": "Anne Marie", "last_name": "Kretchmar",
                                           "email": "annek@noanswer.org"}}
        forward.apply(delete)
        for c in (delete, update, create):
            backward.apply(c)
        assert forward.rows() == backward.rows()
        assert forward.live() == {} and forward.rows()[(key,)][VERSION] == delete["version"]
        assert len(backward.outcome.superseded) == 2  # the late update and create lost to the delete


def test_out_of_order_and_redelivered_changes():
    c1 = change(event("c", {"id": 1, "name": "a"}, lsn=10))
    u2 = change(event("u", {"id": 1, "name": "b"}, lsn=20))
    u3 = change(event("u", {"id": 1, "name": "c"}, lsn=30))
    target = Target()
    first = target.apply(u3, c1, u3)  # one batch: the newest wins, the copy is a duplicate
    assert (len(first.applied), len(first.superseded), len(first.duplicates)) == (1, 1, 1)
    second = target.apply(u2, u3)  # an older change and a re-delivery across batches
    assert (second.superseded, second.duplicates) == ([u2], [u3])
    assert target.live() == {(1,): {"id": 1, "name": "c"}}


def test_delete_then_recreate_and_a_late_insert_cannot_resurrect():
    c1 = change(event("c", {"id": 1, "name": "old"}, lsn=10))
    d2 = change(event("d", None, {"id": 1}, lsn=20))
    c3 = change(event("c", {"id": 1, "name": "new"}, lsn=30))
    d4 = change(event("d", None, {"id": 1, "name": "new"}, lsn=40))
    target = Target()
    target.apply(d2)
    target.apply(c1)  # older than the tombstone: superseded
    assert target.live() == {} and target.outcome.superseded == [c1]
    target.apply(c3)
    assert target.live() == {(1,): {"id": 1, "name": "new"}}
    target.apply(d4, c1, c3)
    assert target.live() == {} and target.rows()[(1,)]["name"] is None


def test_snapshot_read_never_overrides_a_newer_change():
    u = change(event("u", {"id": 1, "name": "changed"}, lsn=500))
    r = change(event("r", {"id": 1, "name": "snapshot"}, lsn=100))
    r_same = change(event("r", {"id": 1, "name": "snapshot"}, lsn=500))
    target = Target()
    target.apply(u)
    target.apply(r, r_same)
    assert target.live()[(1,)]["name"] == "changed"
    assert target.outcome.superseded == [r, r_same] or target.outcome.superseded == [r_same, r]
    fresh = Target()
    fresh.apply(r)
    assert fresh.live()[(1,)]["name"] == "snapshot"


def test_new_column_is_added_and_older_images_leave_it_null():
    target = Target()
    target.apply(change(event("c", {"id": 1, "name": "a"}, lsn=1)))
    target.apply(change(event("u", {"id": 1, "name": "a", "tier": "gold", "score": 1.5}, lsn=2)),
                 change(event("c", {"id": 2, "name": "b"}, lsn=3)))
    assert target.live() == {(1,): {"id": 1, "name": "a", "tier": "gold", "score": 1.5},
                             (2,): {"id": 2, "name": "b", "tier": None, "score": None}}
    columns = {c["name"]: c["type"] for c in sa.inspect(target.engine).get_columns("customers")}
    assert isinstance(columns["tier"], sa.Text) and isinstance(columns["score"], sa.Float)


def test_type_conflict_is_rejected_with_the_reason():
    target = Target()
    target.apply(change(event("c", {"id": 1, "name": "a", "age": 30}, lsn=1)))
    bad = change(event("u", {"id": 1, "name": "a", "age": "thirty"}, lsn=2))
    coercible = change(event("u", {"id": 1, "name": 7, "age": 31}, lsn=3))
    fine = change(event("u", {"id": 1, "name": "b", "age": "32"}, lsn=4))  # numeric text fits an integer
    outcome = target.apply(bad, coercible)
    assert [reason for _, reason in outcome.rejected] == [
        "type conflict: customers.age is INT64: expected an integer, got str 'thirty'",
        "type conflict: customers.name is STRING: expected a string, got int 7",
    ]
    assert target.live()[(1,)]["age"] == 30  # the rejected newer changes did not apply
    target.apply(fine)
    assert target.live()[(1,)] == {"id": 1, "name": "b", "age": 32}


def _column_types(target: Target, table: str = "customers") -> dict:
    return {c["name"]: type(c["type"]).__name__ for c in sa.inspect(target.engine).get_columns(table)}


@pytest.fixture(params=["sqlite", "postgresql"])
def target_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/target.db"
    return request.getfixturevalue("postgres_url")


def test_integer_column_widens_to_float_whatever_the_batching(target_url):
    """The type of a new column was the first batch's: integers only, then a float in a later
    batch was a type conflict; in one batch, it was whichever value came first."""
    log = [change(event("c", {"id": 1, "price": None}, lsn=1)), change(event("c", {"id": 2, "price": 3}, lsn=2)),
           change(event("c", {"id": 3, "price": 2.5}, lsn=3)), change(event("u", {"id": 2, "price": 4}, lsn=4))]
    batched = Target(target_url)
    for batch in (log[:2], log[2:3], log[3:]):
        assert not batched.apply(*batch).rejected
    live = {(1,): {"id": 1, "price": None}, (2,): {"id": 2, "price": 4.0}, (3,): {"id": 3, "price": 2.5}}
    assert batched.live() == live
    assert _column_types(batched)["price"] in ("FLOAT", "REAL", "DOUBLE_PRECISION")
    batched.engine.dispose()
    if target_url.startswith("sqlite"):
        at_once = Target()
        assert not at_once.apply(*reversed(log)).rejected
        assert at_once.live() == live and _column_types(at_once) == _column_types(Target(target_url))


def test_declared_debezium_types_decide_the_column_type():
    """With the Kafka Connect schema, a FLOAT64 column whose first values are whole numbers is a
    float column from the start, and an int64 column stays integer."""
    def wrapped(after: dict, lsn: int) -> dict:
        schema = {"type": "struct", "fields": [
            {"field": "before", "type": "struct", "optional": True, "fields": []},
            {"field": "after", "type": "struct", "optional": True, "fields": [
                {"field": "id", "type": "int32"}, {"field": "price", "type": "float64"},
                {"field": "tags", "type": "array"}, {"field": "since", "type": "int64",
                                                     "name": "io.debezium.time.Timestamp"}]}]}
        return {"schema": schema, "payload": event("c", after, lsn=lsn)}

    first = wrapped({"id": 1, "price": 3, "tags": ["a"], "since": 1700000000000}, 1)
    assert column_types(first) == {"id": "INT64", "price": "FLOAT64", "tags": "JSON", "since": "INT64"}
    fn = ParseChangeFn(KEYS)
    fn.setup()
    parsed, letter = fn._parse(RawRecord(json.dumps(first), "f:1"))
    assert letter is None and parsed["types"]["price"] == "FLOAT64"
    target = Target()
    target.apply(parsed)
    assert _column_types(target)["price"] in ("FLOAT", "REAL")
    second, _ = fn._parse(RawRecord(json.dumps(wrapped({"id": 2, "price": 2.5}, 2)), "f:2"))
    assert not target.apply(second).rejected and target.live()[(2,)]["price"] == 2.5
    bare, _ = fn._parse(RawRecord(json.dumps(event("c", {"id": 3, "n": 1}, lsn=3)), "f:3"))
    assert bare["types"] == {}  # no schema: types come from the values


def test_reserved_and_odd_column_names_are_rejected():
    outcome = Target().apply(change(event("c", {"id": 1, "_cdc_version": "x"}, lsn=1)),
                             change(event("c", {"id": 2, "bad name": 1}, lsn=2)))
    assert len(outcome.rejected) == 2 and not outcome.applied


def test_composite_key_and_a_rerun_on_an_existing_database(tmp_path):
    url = f"sqlite:///{tmp_path}/cdc.db"
    def line(op: str, line_no: int, qty: int, lsn: int) -> dict:
        return change(event(op, {"order_id": "o1", "line_no": line_no, "qty": qty}, table="order_lines", lsn=lsn))

    log = [line("c", 1, 1, 1), line("c", 2, 2, 2), line("u", 1, 9, 3)]
    for run in range(2):  # a second run against the tables the first one left
        engine = sa.create_engine(url)
        outcome = apply_changes(engine, ChangeTables(engine, KEYS), "order_lines", log)
        rows = read_change_table(engine, "order_lines")
        engine.dispose()
        assert {k: r["qty"] for k, r in rows.items()} == {("o1", 1): 9, ("o1", 2): 2}
        assert (len(outcome.applied), len(outcome.duplicates)) == ((2, 0) if run == 0 else (0, 2))


# -- property: any interleaving of one change log converges to the log applied in order --------

def history(steps: list[list[str]]) -> list[dict]:
    """Per key: a snapshot read, then updates/deletes; an update of a deleted row recreates it.
    Positions rise along the log; every other update brings a `tier` column."""
    log, lsn = [], 0
    for key, ops in enumerate(steps):
        lsn += 1
        log.append(event("r", {"id": key, "name": f"k{key}-snapshot"}, lsn=lsn))
        alive = True
        for n, op in enumerate(ops):
            lsn += 1
            image = {"id": key, "name": f"k{key}-{n}"} | ({"tier": f"t{n}"} if n % 2 else {})
            if op == "d" and alive:
                log.append(event("d", None, {"id": key}, lsn=lsn))
                alive = False
            else:
                log.append(event("u" if alive else "c", image, lsn=lsn))
                alive = True
    return [change(e) for e in log]


def folded(log: list[dict]) -> dict:
    """The reference: apply the log in order to a dict (live rows only)."""
    rows: dict = {}
    for c in log:
        if c["op"] == "d":
            rows.pop(c["key"], None)
        else:
            rows[c["key"]] = dict(c["image"])
    columns = {name for row in rows.values() for name in row}
    return {k: {c: row.get(c) for c in columns} for k, row in rows.items()}


@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_random_interleavings_converge_to_the_ordered_log(data):
    steps = data.draw(st.lists(st.lists(st.sampled_from("ud"), max_size=6), min_size=1, max_size=3))
    log = history(steps)
    redelivered = data.draw(st.lists(st.sampled_from(log), max_size=5))
    arrival = data.draw(st.permutations(log + redelivered))
    target, start = Target(), 0
    while start < len(arrival):
        size = data.draw(st.integers(1, 4))
        target.apply(*arrival[start:start + size])
        start += size
    live = target.live()
    columns = {c for row in live.values() for c in row}
    assert live == {k: {c: v for c, v in row.items() if c in columns} | {c: None for c in columns - set(row)}
                    for k, row in folded(log).items()}
    for key, row in target.rows().items():  # every row carries the newest version of its key
        assert row[VERSION] == max(c["version"] for c in log if c["key"] == key)
    counted = target.outcome
    assert len(counted.applied) + len(counted.superseded) + len(counted.duplicates) == len(arrival)
    assert not counted.rejected
