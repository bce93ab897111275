"""One validated windowing configuration (window kind, lateness, triggers, accumulation), and the
means for a step to place its outputs in windows itself."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import apache_beam as beam
from apache_beam.transforms import trigger, window
from apache_beam.transforms.core import Windowing
from apache_beam.utils.timestamp import Duration, Timestamp

__all__ = ["ParDoInWindows", "WindowConfig", "WindowsOf"]

KINDS = ("fixed", "sliding", "session")


@dataclasses.dataclass(frozen=True)
class WindowConfig:
    """`size_seconds` is the window size (fixed, sliding) or the gap (session).

    Early panes fire every `early_firing_seconds` of processing time after the first element of a
    pane; processing time does not pass in a batch run, so batch has the on-time pane only. Late
    panes fire for each record within `allowed_lateness_seconds`; later records are routed to the
    dead letters by RouteTooLateRecords. Windows keep their state `late_margin_seconds` longer than
    the allowed lateness, so a record that the router lets through is never dropped by the
    GroupByKey.
    """

    kind: str = "fixed"
    size_seconds: float = 60.0
    period_seconds: Optional[float] = None
    allowed_lateness_seconds: float = 900.0
    early_firing_seconds: Optional[float] = 30.0
    accumulating: bool = True
    late_margin_seconds: Optional[float] = None  # default: the allowed lateness (at least one window)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"window kind must be one of {KINDS}, not {self.kind!r}")
        if self.size_seconds <= 0:
            raise ValueError("window size_seconds must be > 0")
        if self.kind == "sliding":
            if self.period_seconds is None or not 0 < self.period_seconds <= self.size_seconds:
                raise ValueError("sliding windows need 0 < period_seconds <= size_seconds")
        elif self.period_seconds is not None:
            raise ValueError("period_seconds applies to sliding windows only")
        if self.allowed_lateness_seconds < 0:
            raise ValueError("allowed_lateness_seconds must be >= 0")
        if self.early_firing_seconds is not None and (
                self.early_firing_seconds < 1 or self.early_firing_seconds != int(self.early_firing_seconds)):
            raise ValueError("early_firing_seconds must be a whole number >= 1 (or None for no early panes)")
        if self.late_margin_seconds is not None and self.late_margin_seconds < 0:
            raise ValueError("late_margin_seconds must be >= 0")

    def window_fn(self) -> window.WindowFn:
        if self.kind == "fixed":
            return window.FixedWindows(self.size_seconds)
        if self.kind == "sliding":
            return window.SlidingWindows(self.size_seconds, self.period_seconds)
        return window.Sessions(self.size_seconds)

    @property
    def late_margin(self) -> float:
        if self.late_margin_seconds is not None:
            return self.late_margin_seconds
        return max(self.allowed_lateness_seconds, self.size_seconds)

    @property
    def state_retention_seconds(self) -> float:
        return self.allowed_lateness_seconds + self.late_margin

    def windowing(self) -> Windowing:
        early = (
            trigger.AfterProcessingTime(int(self.early_firing_seconds))
            if self.early_firing_seconds is not None else None
        )
        return Windowing(
            self.window_fn(),
            triggerfn=trigger.AfterWatermark(early=early, late=trigger.AfterCount(1)),
            accumulation_mode=(
                trigger.AccumulationMode.ACCUMULATING if self.accumulating
                else trigger.AccumulationMode.DISCARDING
            ),
            allowed_lateness=Duration.of(self.state_retention_seconds),
        )

    def window_into(self) -> beam.WindowInto:
        w = self.windowing()  # WindowInto(windowing) would drop its allowed lateness: spell it out
        return beam.WindowInto(w.windowfn, trigger=w.triggerfn, accumulation_mode=w.accumulation_mode,
                               allowed_lateness=w.allowed_lateness)


class WindowsOf:
    """`windowfn.assign` for one timestamp, for a step that places its outputs in windows itself
    (see ParDoInWindows). Fixed windows are computed in integer microseconds and reused (a window
    is an immutable value), the global window is a constant; others go through `assign`."""

    _CACHED = 4096  # distinct fixed windows remembered; a run touches few at a time

    def __init__(self, windowfn: window.WindowFn) -> None:
        self._windowfn = windowfn
        self._fixed = (windowfn.size.micros, windowfn.offset.micros) if type(windowfn) is window.FixedWindows else None
        self._global = type(windowfn) is window.GlobalWindows
        self._cache: dict[int, window.IntervalWindow] = {}

    def __call__(self, timestamp: Timestamp, element: Any = None) -> list:
        return self.at_micros(timestamp.micros, element)

    def at_micros(self, micros: int, element: Any = None) -> list:
        """The windows of a timestamp given in microseconds (a WindowedValue's timestamp_micros)."""
        if self._fixed is not None:
            size, offset = self._fixed
            start = micros - (micros - offset) % size
            found = self._cache.get(start)
            if found is None:
                if len(self._cache) >= self._CACHED:
                    self._cache.clear()
                found = self._cache[start] = window.IntervalWindow(
                    Timestamp(micros=start), Timestamp(micros=start + size))
            return [found]
        if self._global:
            return [_GLOBAL_WINDOW]
        return list(self._windowfn.assign(window.WindowFn.AssignContext(Timestamp(micros=micros), element=element)))

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": {}}


_GLOBAL_WINDOW = window.GlobalWindow()


class ParDoInWindows(beam.ParDo):
    """A ParDo whose DoFn places every output in `windowing`'s windows itself, by yielding
    WindowedValues (windows from WindowsOf): a Map and the WindowInto after it, in one step.

    Beam runs a WindowInto as one more DoFn per record, with its slowest argument binding: the
    three window assignments of the clickstream graph took about a fifth of a batch run's time
    (per-transform times of a profiled 30k-event run). The windowing declared here is what the
    runner sees on the output, as a WindowInto would declare it.

    A DoFn that needs its input's timestamp takes `windowed=beam.DoFn.WindowedValueParam` and
    reads `windowed.timestamp_micros`: Beam's TimestampParam builds a Timestamp object per record
    and per step (3.0-3.8 against 1.9-2.0 us a record in a 300k-element FnApiRunner probe, 0.5-0.6
    for a DoFn with no parameter).
    """

    def __init__(self, fn: beam.DoFn, windowing: Windowing) -> None:
        super().__init__(fn)
        self._windowing = windowing

    def get_windowing(self, unused_inputs: Any) -> Windowing:
        return self._windowing
