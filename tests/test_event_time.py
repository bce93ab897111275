"""Event time: stamping within the accepted bounds, and the replay's event-time guard."""

from __future__ import annotations

import json
import time

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from kappaflow.core.records import DEAD_LETTER_TAG, RawRecord
from transforms.event_time import EventTimeBounds, EventTimeOf, WithEventTime


def test_bounds_are_validated_and_say_why():
    with pytest.raises(ValueError, match="--max_future_seconds"):
        EventTimeBounds(-1)
    with pytest.raises(ValueError, match="--max_future_seconds"):
        EventTimeBounds(float("inf"))
    bounds, now = EventTimeBounds(60), 1_800_000_000.0
    assert bounds.problem(now + 60, now) is None and bounds.problem(0.0, now) is None
    assert bounds.problem(now + 61, now) == ("2027-01-15T08:01:01.000000Z is more than 60 s in the future "
                                             "(--max_future_seconds)")
    assert bounds.problem(None, now) == "missing" and "before 1970" in bounds.problem(-1.0, now)


def test_times_beyond_the_horizon_are_dead_letters_of_stage_event_time(run_batch, count_of):
    now = time.time()
    events = [{"id": "now", "t": now - 10}, {"id": "soon", "t": now + 3000}, {"id": "next_year", "t": now + 3e7}]

    def build(p):
        out = p | beam.Create(events) | WithEventTime("t", EventTimeBounds(3600))
        assert_that(out.events | beam.Map(lambda e, ts=beam.DoFn.TimestampParam: (e["id"], abs(float(ts) - e["t"]) < 1e-5)),
                    equal_to([("now", True), ("soon", True)]), label="events")
        assert_that(out[DEAD_LETTER_TAG] | beam.Map(lambda r: (r.element["id"], r.stage, r.reason[:9])),
                    equal_to([("next_year", "event_time", "field t: ")]), label="dead")

    assert count_of(run_batch(build), "records_invalid") == 1


def test_the_replay_guard_ignores_times_out_of_bounds_and_undecodable_records():
    guarded = EventTimeBounds(60).guard(EventTimeOf("t"))
    now = time.time()
    assert guarded(RawRecord(json.dumps({"t": now - 5}).encode(), "f:1")) == pytest.approx(now - 5)
    assert guarded(RawRecord(json.dumps({"t": now + 3600}).encode(), "f:2")) is None
    assert guarded(RawRecord(b"[" * 5000, "f:3")) is None  # json.loads would raise RecursionError
    assert guarded(RawRecord(json.dumps({"t": 1e20}).encode(), "f:4")) is None
