"""One validated windowing configuration: window kind, lateness, triggers, accumulation."""

from __future__ import annotations

import dataclasses
from typing import Optional

import apache_beam as beam
from apache_beam.transforms import trigger, window
from apache_beam.utils.timestamp import Duration

__all__ = ["WindowConfig"]

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

    def window_into(self) -> beam.WindowInto:
        early = (
            trigger.AfterProcessingTime(int(self.early_firing_seconds))
            if self.early_firing_seconds is not None else None
        )
        return beam.WindowInto(
            self.window_fn(),
            trigger=trigger.AfterWatermark(early=early, late=trigger.AfterCount(1)),
            accumulation_mode=(
                trigger.AccumulationMode.ACCUMULATING if self.accumulating
                else trigger.AccumulationMode.DISCARDING
            ),
            allowed_lateness=Duration.of(self.state_retention_seconds),
        )
