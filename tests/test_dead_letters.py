"""The one dead-letter path: stages emit Rejections, a DeadLetters collector hands them all to one
WriteDeadLetters, which makes the rows. Dead letters cannot be lost without a word: a stage's
dead-letter output nobody writes stops the run before it starts
(kappaflow/checks.check_dead_letters_reach_a_sink)."""

from __future__ import annotations

import json

import apache_beam as beam
import pytest

from io_connectors.dead_letter_sink import WriteDeadLetters
from kappaflow.checks import check_dead_letters_reach_a_sink
from kappaflow.core.records import DEAD_LETTER_SCHEMA, DEAD_LETTER_TAG, RawRecord, Rejection, dead_letter_row
from kappaflow.core.schema import Field, FieldType, Schema
from kappaflow.errors import ConfigurationError
from kappaflow.tables import read_rows
from transforms.dead_letters import DeadLetters
from transforms.event_time import WithEventTime
from transforms.parse import ParseEvents
from conftest import batch_pipeline

EVENT = Schema(name="event", fields=(Field("id", FieldType.STRING, required=True),))
TIMED = Schema(name="timed", fields=(Field("id", FieldType.STRING, required=True), Field("t", FieldType.FLOAT64)))


def _parsed(p: beam.Pipeline):
    return p | beam.Create([RawRecord(b'{"id": "a"}', "in:1")]) | "Parse" >> ParseEvents(EVENT)


def test_a_dead_letter_output_nobody_asked_for_stops_the_run():
    p = beam.Pipeline()
    _ = _parsed(p).events | beam.Map(len)
    with pytest.raises(ConfigurationError, match=r"^Parse/.*: its dead letters go nowhere"):
        check_dead_letters_reach_a_sink(p)


def test_a_dead_letter_output_taken_but_not_written_stops_the_run():
    p = beam.Pipeline()
    parsed = _parsed(p)
    _ = parsed[DEAD_LETTER_TAG]  # asked for, then forgotten
    with pytest.raises(ConfigurationError, match="dead letters go nowhere"):
        check_dead_letters_reach_a_sink(p)


def test_dead_letters_taken_anywhere_but_the_sink_stop_the_run():
    p = beam.Pipeline()
    _ = _parsed(p)[DEAD_LETTER_TAG] | beam.Map(print)  # gathered by hand, and lost
    with pytest.raises(ConfigurationError, match=r"^Parse/.*: its dead letters go nowhere"):
        check_dead_letters_reach_a_sink(p)


def test_dead_letters_handed_to_the_sink_pass(tmp_path):
    p = beam.Pipeline()
    parsed = _parsed(p)
    _ = (parsed[DEAD_LETTER_TAG],) | WriteDeadLetters(f"sqlite:///{tmp_path}/dead.db", "t")
    check_dead_letters_reach_a_sink(p)


# -- the one dead-letter path: stages emit Rejections, one step makes the rows ---------------------

def test_a_rejection_becomes_a_row_of_the_pipeline_with_the_id_read_once():
    event = {"id": "e1", "ip": "10.1.2.3"}
    row = dead_letter_row(Rejection("units", "field unit: unknown", event, "in:3", event_time=5.0), "p", "id")
    assert (row["pipeline"], row["stage"], row["reason"], row["origin"], row["event_id"], row["event_time"]) == (
        "p", "units", "field unit: unknown", "in:3", "e1", 5.0)
    assert json.loads(row["payload"]) == {"id": "e1", "ip": "<redacted>"} and len(row["dead_letter_id"]) == 32
    # The id comes from an event dict's id field, unless the stage named one; text is quoted as it is.
    assert dead_letter_row(Rejection("s", "r", {"id": 7}), "p", "id")["event_id"] is None
    assert dead_letter_row(Rejection("s", "r", {"id": "e1"}, event_id="a9"), "p", "id")["event_id"] == "a9"
    assert dead_letter_row(Rejection("s", "r", '{"id": "e1"}'), "p", "id")["event_id"] is None
    assert dead_letter_row(Rejection("s", "r", {"id": "e1"}), "p")["event_id"] is None


def test_collected_rejections_of_every_stage_are_written_by_one_step(tmp_path):
    url = f"sqlite:///{tmp_path}/dead.db"
    records = [RawRecord(b'{"id": "a", "t": 10}', "in:1"), RawRecord(b"{bad", "in:2"),
               RawRecord(b'{"id": "b", "t": 4e9}', "in:3")]
    p = batch_pipeline()  # a named runner: Beam's default may try to fetch Prism, and that sticks
    with DeadLetters(WriteDeadLetters(url, "t", id_field="id")) as dead_letters:
        parsed = dead_letters.collect(p | beam.Create(records) | "Parse" >> ParseEvents(TIMED))
        timed = dead_letters.collect(parsed | "EventTime" >> WithEventTime("t"))
        _ = timed | beam.Map(len)
    check_dead_letters_reach_a_sink(p)
    assert [t.full_label for t in p.transforms_stack[0].parts if t.full_label.startswith("WriteDeadLetters")] == [
        "WriteDeadLetters"]
    p.run().wait_until_finish()
    rows = sorted(read_rows(url, DEAD_LETTER_SCHEMA).values(), key=lambda r: r["origin"] or r["event_id"])
    assert [(r["pipeline"], r["stage"], r["event_id"], r["origin"]) for r in rows] == [
        ("t", "event_time", "b", ""), ("t", "parse", None, "in:2")]
    with pytest.raises(RuntimeError, match="after they were written"):
        dead_letters.collect(parsed)


def test_a_composite_s_outputs_by_tag_give_their_main_output_and_flattened_rejections_reach_the_sink():
    from transforms.late_data import RouteTooLateRecords
    from transforms.windowing import WindowConfig

    p = beam.Pipeline()
    with DeadLetters(WriteDeadLetters("sqlite://", "t", id_field="id")) as dead_letters:
        events = p | beam.Create([{"id": "a", "t": 1.0}])
        routed = events | "Route" >> RouteTooLateRecords(WindowConfig(size_seconds=60), shard_key=lambda e: e["id"])
        in_time = dead_letters.collect(routed)  # {"events": ..., DEAD_LETTER_TAG: a Flatten of two steps'}
    assert in_time is routed.events
    check_dead_letters_reach_a_sink(p)


def test_a_failed_build_writes_nothing():
    p = beam.Pipeline()
    with pytest.raises(ValueError), DeadLetters(WriteDeadLetters("sqlite://", "t")) as dead_letters:
        dead_letters.collect(_parsed(p))
        raise ValueError("bad option")
    assert not any(t.full_label.startswith("WriteDeadLetters") for t in p.transforms_stack[0].parts)
