"""Clock skew: the ingest time replaces a missing or skewed device time; the replay's event time
agrees with the corrected time."""

from __future__ import annotations

import json

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from kappaflow.core.records import DEAD_LETTER_TAG, RawRecord
from transforms.clock_skew import (INGEST_TIME, ClockSkewConfig, CorrectClockSkew, SkewCorrectedEventTime,
                                   corrected_time)

T = 1772431200.0
CONFIG = ClockSkewConfig(max_skew_seconds=300)


@pytest.mark.parametrize("device, ingest, expected", [
    (T, None, (T, False)),               # plain files: the device time is all there is
    (None, None, (None, False)),         # nothing at all
    (T + 299, T, (T + 299, False)),      # within the bound: the device is trusted
    (T + 300, T, (T + 300, False)),      # on the bound
    (T + 301, T, (T, True)),             # ahead
    (T - 86400, T, (T, True)),           # a day behind
    (None, T, (T, True)),                # missing: the ingest time
])
def test_corrected_time(device, ingest, expected):
    assert corrected_time(device, ingest, 300) == expected


def test_config_is_validated():
    with pytest.raises(ValueError):
        ClockSkewConfig(max_skew_seconds=-1)


def test_correct_clock_skew(run_batch, count_of):
    events = [
        {"device_id": "ok", "timestamp": T + 5, INGEST_TIME: T},
        {"device_id": "skewed", "timestamp": T + 3600, INGEST_TIME: T},
        {"device_id": "missing", "timestamp": None, INGEST_TIME: T},
        {"device_id": "file", "timestamp": T + 3600},
        {"device_id": "nothing", "timestamp": None},
    ]

    def build(p):
        out = p | beam.Create(events) | CorrectClockSkew(CONFIG)
        assert_that(out.events | beam.Map(lambda e: (e["device_id"], e["timestamp"], e["device_timestamp"],
                                                     e["ingest_time"], e["clock_corrected"])),
                    equal_to([("ok", T + 5, T + 5, T, False), ("skewed", T, T + 3600, T, True),
                              ("missing", T, None, T, True), ("file", T + 3600, T + 3600, None, False)]),
                    label="events")
        assert_that(out[DEAD_LETTER_TAG] | beam.Map(lambda r: (r.element["device_id"], r.stage, r.reason)),
                    equal_to([("nothing", "clock", "field timestamp: missing, and the source knows no ingest time")]),
                    label="dead")

    result = run_batch(build)
    assert count_of(result, "clock_skew_corrected") == 2
    assert count_of(result, "records_invalid") == 1


def test_replay_event_time_agrees_with_the_correction():
    event_time = SkewCorrectedEventTime(CONFIG)
    ms = int((T + 3600) * 1000)
    assert event_time(RawRecord(json.dumps({"timestamp": ms}).encode(), "f:1", T)) == T
    assert event_time(RawRecord(json.dumps({"timestamp": ms}).encode(), "f:1", None)) == T + 3600
    assert event_time(RawRecord({"timestamp": "2026-03-02T06:00:10Z"}, "f#1", T)) == T + 10
    assert event_time(RawRecord({"value": 1}, "f#1", T)) == T
    assert event_time(RawRecord({"value": 1}, "f#1", None)) is None
    assert event_time(RawRecord(b"{broken", "f:1", T)) == T  # the parser will reject it
    assert event_time(RawRecord(b'{"timestamp": "yesterday"}', "f:1", None)) is None
