"""Dead letters cannot be lost without a word: a stage's dead-letter output nobody writes stops the
run before it starts (kappaflow/checks.check_dead_letters_reach_a_sink)."""

from __future__ import annotations

import apache_beam as beam
import pytest

from io_connectors.dead_letter_sink import WriteDeadLetters
from kappaflow.checks import check_dead_letters_reach_a_sink
from kappaflow.core.records import DEAD_LETTER_TAG, RawRecord
from kappaflow.core.schema import Field, FieldType, Schema
from kappaflow.errors import ConfigurationError
from transforms.parse import ParseEvents

EVENT = Schema(name="event", fields=(Field("id", FieldType.STRING, required=True),))


def _parsed(p: beam.Pipeline):
    return p | beam.Create([RawRecord(b'{"id": "a"}', "in:1")]) | "Parse" >> ParseEvents(EVENT, "t", "id")


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


def test_dead_letters_handed_to_the_sink_pass(tmp_path):
    p = beam.Pipeline()
    parsed = _parsed(p)
    _ = (parsed[DEAD_LETTER_TAG],) | WriteDeadLetters(f"sqlite:///{tmp_path}/dead.db", "t")
    check_dead_letters_reach_a_sink(p)
