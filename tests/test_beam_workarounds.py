"""The FnApiRunner's one-pane-per-window batch grouping: the defect it works around, and that it
changes no result."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import trigger, window
from apache_beam.utils.timestamp import Timestamp

from kappaflow import beam_workarounds


def test_canary_beam_still_replays_triggers_for_a_windowed_batch_group_by_key():
    # Fails once Beam has a batch driver for windows other than the global one: then the
    # workaround (kappaflow/beam_workarounds.py, 3.) can go.
    windowing = beam.WindowInto(window.FixedWindows(10)).windowing
    original = getattr(beam_workarounds, "_original_create_trigger_driver", trigger.create_trigger_driver)
    assert isinstance(original(windowing, True), trigger.GeneralTriggerDriver)


def _grouped(run_batch, patched: bool, monkeypatch):
    if patched:
        beam_workarounds.one_pane_per_window_in_batch()
    else:
        monkeypatch.setattr(trigger, "create_trigger_driver",
                            getattr(beam_workarounds, "_original_create_trigger_driver", trigger.create_trigger_driver))
    events = [("a", 1), ("a", 4), ("b", 12), ("a", 15), ("a", 3)]

    def build(p):
        out = (
            p | beam.Create(events)
            | beam.Map(lambda kv: window.TimestampedValue(kv, kv[1]))
            | beam.WindowInto(window.FixedWindows(10), trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
                              accumulation_mode=trigger.AccumulationMode.DISCARDING,
                              timestamp_combiner=window.TimestampCombiner.OUTPUT_AT_EARLIEST)
            | beam.GroupByKey()
            | beam.Map(lambda kv, w=beam.DoFn.WindowParam, ts=beam.DoFn.TimestampParam, pane=beam.DoFn.PaneInfoParam:
                       (kv[0], sorted(kv[1]), w.start.micros // 10**6, ts.micros // 10**6, pane.index))
        )
        assert_that(out, equal_to([("a", [1, 3, 4], 0, 1, 0), ("a", [15], 10, 15, 0), ("b", [12], 10, 12, 0)]))

    run_batch(build)


def test_one_pane_per_window_gives_the_trigger_machinery_s_result(run_batch, monkeypatch):
    _grouped(run_batch, patched=False, monkeypatch=monkeypatch)
    _grouped(run_batch, patched=True, monkeypatch=monkeypatch)
