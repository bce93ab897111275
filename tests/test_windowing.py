"""WindowConfig validation, the window functions / triggers it builds, and steps that place their
outputs in windows themselves."""

from __future__ import annotations

import pickle

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import trigger, window
from apache_beam.transforms.core import Windowing
from apache_beam.utils.timestamp import Duration, Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from transforms.windowing import ParDoInWindows, WindowConfig, WindowsOf


@pytest.mark.parametrize("kwargs, message", [
    (dict(kind="tumbling"), "window kind"),
    (dict(size_seconds=0), "size_seconds"),
    (dict(kind="sliding", size_seconds=60), "period_seconds"),
    (dict(kind="sliding", size_seconds=60, period_seconds=0), "period_seconds"),
    (dict(kind="sliding", size_seconds=60, period_seconds=90), "period_seconds"),
    (dict(kind="fixed", period_seconds=30), "sliding windows only"),
    (dict(early_firing_seconds=0.5), "early_firing_seconds"),
    (dict(early_firing_seconds=0), "early_firing_seconds"),
    (dict(early_firing_seconds=1.5), "early_firing_seconds"),
    (dict(allowed_lateness_seconds=-1), "allowed_lateness_seconds"),
    (dict(late_margin_seconds=-1), "late_margin_seconds"),
])
def test_invalid_configs_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WindowConfig(**kwargs)


def test_fixed_window_fn():
    fn = WindowConfig(kind="fixed", size_seconds=60).window_fn()
    assert isinstance(fn, window.FixedWindows)
    assert fn.size == Duration.of(60)
    assert fn.assign(window.WindowFn.AssignContext(130)) == [window.IntervalWindow(120, 180)]


def test_sliding_window_fn():
    fn = WindowConfig(kind="sliding", size_seconds=60, period_seconds=20).window_fn()
    assert isinstance(fn, window.SlidingWindows)
    assert (fn.size, fn.period) == (Duration.of(60), Duration.of(20))
    assigned = fn.assign(window.WindowFn.AssignContext(130))
    assert sorted((w.start.micros // 10**6, w.end.micros // 10**6) for w in assigned) == [
        (80, 140), (100, 160), (120, 180)]


def test_session_window_fn():
    fn = WindowConfig(kind="session", size_seconds=300).window_fn()
    assert isinstance(fn, window.Sessions)
    assert fn.gap_size == Duration.of(300)


def test_valid_edge_values():
    assert WindowConfig(kind="sliding", size_seconds=60, period_seconds=60).period_seconds == 60
    assert WindowConfig(early_firing_seconds=None, allowed_lateness_seconds=0).early_firing_seconds is None
    assert WindowConfig(early_firing_seconds=2.0).early_firing_seconds == 2.0


def test_state_retention_defaults_to_twice_the_lateness():
    assert WindowConfig(allowed_lateness_seconds=900).state_retention_seconds == 1800
    assert WindowConfig(allowed_lateness_seconds=900, late_margin_seconds=60).state_retention_seconds == 960
    assert WindowConfig(allowed_lateness_seconds=0, late_margin_seconds=0).state_retention_seconds == 0


def test_window_into_trigger_and_accumulation():
    transform = WindowConfig(size_seconds=60, allowed_lateness_seconds=100, early_firing_seconds=30,
                             late_margin_seconds=20).window_into()
    assert isinstance(transform, beam.WindowInto)
    strategy = transform.get_windowing(None)
    assert isinstance(strategy.windowfn, window.FixedWindows)
    assert repr(strategy.triggerfn) == repr(trigger.AfterWatermark(
        early=trigger.AfterProcessingTime(30), late=trigger.AfterCount(1)))
    assert strategy.accumulation_mode == trigger.AccumulationMode.ACCUMULATING
    assert strategy.allowed_lateness == Duration.of(120)

    discarding = WindowConfig(early_firing_seconds=None, accumulating=False).window_into()
    strategy = discarding.get_windowing(None)
    assert repr(strategy.triggerfn) == repr(trigger.AfterWatermark(late=trigger.AfterCount(1)))
    assert strategy.accumulation_mode == trigger.AccumulationMode.DISCARDING


def test_windowing_is_what_window_into_declares():
    config = WindowConfig(size_seconds=60, allowed_lateness_seconds=100, late_margin_seconds=20)
    declared, into = config.windowing(), config.window_into().get_windowing(None)
    assert (declared.windowfn, repr(declared.triggerfn), declared.accumulation_mode, declared.allowed_lateness,
            declared.timestamp_combiner) == (into.windowfn, repr(into.triggerfn), into.accumulation_mode,
                                             into.allowed_lateness, into.timestamp_combiner)


@pytest.mark.parametrize("windowfn", [
    window.FixedWindows(60), window.FixedWindows(3600, offset=17), window.SlidingWindows(60, 20),
    window.Sessions(30), window.GlobalWindows()], ids=repr)
def test_windows_of_assigns_as_the_window_fn(windowfn):
    windows_of = WindowsOf(windowfn)
    for micros in (0, 1, 59_999_999, 60_000_000, 1_705_322_445_123_456, -1, -60_000_001):
        ts = Timestamp(micros=micros)
        assert windows_of(ts, {"e": 1}) == list(windowfn.assign(window.WindowFn.AssignContext(ts, element={"e": 1})))
    assert pickle.loads(pickle.dumps(windows_of))(Timestamp(micros=5)) == windows_of(Timestamp(micros=5))


@pytest.mark.parametrize("runner", ["run_batch", "run_prism"])
def test_a_step_in_windows_declares_them_and_places_its_outputs(runner, request):
    fixed = Windowing(window.FixedWindows(60))

    class KeyInWindowFn(beam.DoFn):
        def __init__(self):
            self._windows = WindowsOf(fixed.windowfn)

        def process(self, element, timestamp=beam.DoFn.TimestampParam):
            yield WindowedValue(("k", element), timestamp, self._windows(timestamp))

    def build(p):
        placed = (p | beam.Create([1, 59, 61, 130]) | beam.Map(lambda t: window.TimestampedValue(t, t))
                  | "InWindows" >> ParDoInWindows(KeyInWindowFn(), fixed))
        assert placed.windowing == fixed
        grouped = placed | beam.GroupByKey() | beam.MapTuple(lambda k, vs, w=beam.DoFn.WindowParam: (
            w.start.micros // 1_000_000, sorted(vs)))
        assert_that(grouped, equal_to([(0, [1, 59]), (60, [61]), (120, [130])]))

    request.getfixturevalue(runner)(build)
