"""WindowConfig validation and the window functions / triggers it builds."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.transforms import trigger, window
from apache_beam.utils.timestamp import Duration

from transforms.windowing import WindowConfig


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
