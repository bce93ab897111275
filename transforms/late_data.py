"""Route records that are too late for every window they belong to into the dead letters.

Beam's GroupByKey drops such records and only bumps a counter. Python DoFns cannot read the
watermark, so the router learns a lower bound of it from event-time timers: a fired timer proves
the watermark passed its time. Two kinds of timers per shard:
- one per window deadline (window end + allowed lateness) of the records it saw;
- a ladder of probes ahead of the latest record: every margin/2 for 24 margins, then doubling, so
  a shard that went quiet still learns how far the watermark moved. It is laid again once a record
  is 12 margins past the last base, so the dense part always covers 12 margins ahead.
The GroupByKey keeps window state for `late_margin` beyond the allowed lateness, and drops a record
only when the watermark is more than that margin past its deadline. While the router's bound lags
the watermark by less than the margin, every record it lets through is aggregated. The bound lags
by more only after a shard is quiet for over 12 margins AND the watermark then jumps more than a
margin in one step; the run's accounting shows such a loss as UNBALANCED.
A source that knows its watermark saves the guess: files, read in batch or replayed, stamp each
record with theirs (`RawRecord.watermark`, carried in the event under SOURCE_WATERMARK). Such a
record is judged by it alone, with no state read and no timer: exactly, since the runner's
watermark cannot pass a record in flight, and cheaply (in batch the watermark is -inf, so nothing
is late and no ladder is laid; on Prism a stage that sets timers cost twice the runner's CPU of
the rest of a replay). Live sources (Pub/Sub, Kafka) send no watermark: their records use timers.
Routing is sharded (not per group key), so a quiet key learns the watermark from busy neighbours.
A fired timer is NOT a bound for other shards: batch runners (Flink) fire a key's timers when that
key's input is done, before other keys are processed.
"""

from __future__ import annotations

import zlib
from typing import Any, Callable, Iterator

import apache_beam as beam
from apache_beam.coders import FloatCoder, TupleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindow, WindowFn
from apache_beam.utils.timestamp import Timestamp

from kappaflow.core import metrics
from kappaflow.core.records import DEAD_LETTER_TAG, SOURCE_WATERMARK, Rejection
from transforms.windowing import WindowConfig, WindowsOf

__all__ = ["JudgeBySourceWatermarkFn", "RouteTooLateRecords", "RouteTooLateFn", "Routed", "TooLateJudge"]


_LINEAR_RUNGS = 24
_NEG_INF = float("-inf")


def probe_offsets(margin: float) -> tuple[float, ...]:
    """Offsets of the probe ladder from the latest record: dense first, then doubling."""
    spacing = max(margin / 2, 0.001)
    offsets = [spacing * i for i in range(1, 2 * _LINEAR_RUNGS + 1)]
    horizon = GlobalWindow().max_timestamp().micros / 1e6
    while offsets[-1] < horizon:
        offsets.append(offsets[-1] * 2)
    return tuple(offsets)


class TooLateJudge:
    """When each window of a record closes for good (end + allowed lateness), and the rejection of
    a record too late for all of its windows."""

    def __init__(self, window_fn: WindowFn, allowed_lateness: float) -> None:
        self._windows = WindowsOf(window_fn)
        self._lateness = allowed_lateness

    def deadlines(self, timestamp: Timestamp, event: Any) -> list[float]:
        """End + allowed lateness of each window the record belongs to, in seconds (a window's last
        instant is one microsecond before its end)."""
        return [(w.end.micros - 1) / 1e6 + self._lateness for w in self._windows(timestamp, event)]

    def rejection(self, event: dict, timestamp: Timestamp) -> Rejection:
        windows = self._windows(timestamp, event)
        missed = max(windows, key=lambda w: w.start)
        return Rejection(
            "late",
            f"event time {timestamp.to_rfc3339()} is too late for window "
            f"[{missed.start.to_rfc3339()}, {missed.end.to_rfc3339()}): the watermark passed "
            f"its end + allowed lateness ({self._lateness:g}s)",
            event, event_time=timestamp.micros / 1e6, window_start=missed.start.micros / 1e6,
        )


class _CountsTooLate:
    """The router's counters."""

    def __init__(self) -> None:
        super().__init__()
        self._too_late = Metrics.counter(metrics.NAMESPACE, metrics.TOO_LATE)
        self._partly_late = Metrics.counter(metrics.NAMESPACE, "too_late_for_some_windows")


class JudgeBySourceWatermarkFn(_CountsTooLate, beam.DoFn):
    """A record whose source stamped its watermark on it (a file, read in batch or replayed) →
    judged by that alone: in time for some window (main output) or too late (dead letter), with no
    state and no timer. A record without one (a live source) → the LIVE output, for RouteTooLateFn."""

    LIVE = "live"

    def __init__(self, judge: TooLateJudge) -> None:
        super().__init__()
        self._judge = judge

    def process(self, event: dict, windowed=beam.DoFn.WindowedValueParam) -> Iterator[Any]:
        if SOURCE_WATERMARK not in event:
            yield beam.pvalue.TaggedOutput(self.LIVE, event)
        else:
            event = dict(event)  # Beam inputs are immutable
            bound = event.pop(SOURCE_WATERMARK)
            # In batch (bound -inf) nothing is late: skip the deadlines (and the Timestamp).
            deadlines = self._judge.deadlines(windowed.timestamp, event) if bound != _NEG_INF else ()
            open_deadlines = [deadline for deadline in deadlines if deadline > bound]
            if open_deadlines or not deadlines:
                if len(open_deadlines) < len(deadlines):
                    self._partly_late.inc()
                yield event
            else:
                self._too_late.inc()
                yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, self._judge.rejection(event, windowed.timestamp))


class RouteTooLateFn(_CountsTooLate, beam.DoFn):
    """(shard, live record) → the record if some window of it is still open by the shard's bound
    of the watermark (its fired timers), else its dead letter."""

    # (largest fired timer = watermark lower bound, event time the probe ladder was last laid from)
    KNOWN = ReadModifyWriteStateSpec("known", TupleCoder([FloatCoder(), FloatCoder()]))
    TIMERS = TimerSpec("watermark", TimeDomain.WATERMARK)

    def __init__(self, judge: TooLateJudge, margin: float) -> None:
        super().__init__()
        self._judge = judge
        self._margin = margin

    def setup(self) -> None:
        self._offsets = probe_offsets(self._margin)
        self._relay_after = self._offsets[_LINEAR_RUNGS - 1]
        self._horizon = GlobalWindow().max_timestamp().micros / 1e6

    def start_bundle(self) -> None:
        # Setting a timer is an output to the runner: set each (shard, deadline) once per bundle.
        self._timers_set: set[tuple[int, float]] = set()
        # Within a bundle only this DoFn changes a shard's state: keep what it read or wrote, so a
        # portable runner is asked once per shard and bundle, not once per record.
        self._known: dict[int, tuple[float, float]] = {}

    def _read(self, shard: int, known) -> tuple[float, float]:
        value = self._known.get(shard)
        if value is None:
            value = self._known[shard] = known.read() or (_NEG_INF, _NEG_INF)
        return value

    def _write(self, shard: int, known, value: tuple[float, float]) -> None:
        self._known[shard] = value
        known.write(value)

    def process(
        self,
        element: beam.typehints.Tuple[int, Any],
        timestamp=beam.DoFn.TimestampParam,
        known=beam.DoFn.StateParam(KNOWN),
        timers=beam.DoFn.TimerParam(TIMERS),
    ) -> Iterator[Any]:
        shard, event = element
        deadlines = self._judge.deadlines(timestamp, event)
        passed, ladder_base = self._read(shard, known)
        open_deadlines = [deadline for deadline in deadlines if deadline > passed]
        if not open_deadlines:
            self._too_late.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, self._judge.rejection(event, timestamp))
        else:
            if len(open_deadlines) < len(deadlines):
                self._partly_late.inc()
            self._arm_timers(shard, timestamp.micros / 1e6, open_deadlines, passed, ladder_base, known, timers)
            yield event

    def _arm_timers(self, shard, event_time, open_deadlines, passed, ladder_base, known, timers) -> None:
        for deadline in open_deadlines:
            if (shard, deadline) not in self._timers_set:
                self._timers_set.add((shard, deadline))
                timers.set(Timestamp.of(deadline), dynamic_timer_tag=repr(deadline))
        if event_time >= ladder_base + self._relay_after:
            # Lay the ladder again from the newest record (same tags: earlier rungs move up). Only
            # once half the dense rungs are behind it: a record never outruns the dense part, and
            # a long replay sets a few timers per shard per dozen margins, not per half margin.
            for rung, offset in enumerate(self._offsets):
                timers.set(Timestamp.of(min(event_time + offset, self._horizon)), dynamic_timer_tag=f"probe{rung}")
            self._write(shard, known, (passed, event_time))

    @on_timer(TIMERS)
    def watermark_passed(
        self, shard=beam.DoFn.KeyParam, fired=beam.DoFn.TimestampParam, known=beam.DoFn.StateParam(KNOWN)
    ) -> None:
        passed, ladder_base = self._read(shard, known)
        fired_seconds = fired.micros / 1e6
        if fired_seconds > passed:
            self._write(shard, known, (fired_seconds, ladder_base))


class Routed(dict):
    """What RouteTooLateRecords gives: {"events": records in time, DEAD_LETTER_TAG: too-late
    rejections}, the events also as `.events` (the shape of a ParDo's outputs)."""

    @property
    def events(self) -> beam.PCollection:
        return self["events"]


class RouteTooLateRecords(beam.PTransform):
    """Timestamped events → (events in time for at least one window, too-late dead letters).

    Records that carry their source's watermark are judged in one stateless step; the rest (live
    sources) go through the sharded, timer-driven RouteTooLateFn. A file's records so skip the
    keyed step and its shuffle (a batch run's records then cross one shuffle fewer).
    """

    def __init__(
        self,
        config: WindowConfig,
        shard_key: Callable[[dict], str],
        shards: int = 16,
    ) -> None:
        super().__init__()
        if shards < 1:
            raise ValueError("shards must be >= 1")
        self._config = config
        self._judge = TooLateJudge(config.window_fn(), config.allowed_lateness_seconds)
        self._shard_key = shard_key
        self._shards = shards

    def expand(self, events: beam.PCollection) -> Routed:
        shard_key, shards = self._shard_key, self._shards
        judged = events | "JudgeBySourceWatermark" >> beam.ParDo(JudgeBySourceWatermarkFn(self._judge)).with_outputs(
            JudgeBySourceWatermarkFn.LIVE, DEAD_LETTER_TAG, main="events")
        live = (
            judged[JudgeBySourceWatermarkFn.LIVE]
            | "ShardByGroupKey" >> beam.Map(
                lambda e: (zlib.crc32(shard_key(e).encode("utf-8")) % shards, e)
            ).with_output_types(beam.typehints.Tuple[int, Any])
            | "RouteByTimers" >> beam.ParDo(
                RouteTooLateFn(self._judge, self._config.late_margin)
            ).with_outputs(DEAD_LETTER_TAG, main="events")
        )
        return Routed({
            "events": (judged.events, live.events) | "InTime" >> beam.Flatten(),
            DEAD_LETTER_TAG: (judged[DEAD_LETTER_TAG], live[DEAD_LETTER_TAG]) | "TooLate" >> beam.Flatten(),
        })
