"""Prism 2.70 re-delivers records when it splits a stateful bundle that mixes data and timers.

Prism splits any bundle that makes no progress between two progress reports. On a stateful stage a
bundle may hold fired timers of some keys and data of others; Prism applies the SDK's data-channel
split index to that mixed list and re-queues records the SDK already processed (apache/beam#35771).
This is what made our Prism streaming runs count a few records twice past the dedup. The smallest
trigger: a timer callback slower than two progress reports (2 × 100 ms) in a bundle that also
carries data. `kappaflow.prism.resolve` turns Prism's splitting off; these tests show the bug
without it (a canary: when a Beam upgrade fixes Prism it fails, and the switch can go) and its
absence with it.
"""

from __future__ import annotations

import collections
import time
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import DebugOptions, PipelineOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import TimerSpec, on_timer
from apache_beam.transforms.window import TimestampedValue

from kappaflow import prism

pytestmark = pytest.mark.slow

STEPS, PER_STEP, KEYS = 4, 10, 13
ATTEMPTS = 3


class RecordSlowTimersFn(beam.DoFn):
    """Appends every processed element to a file; each element sets a timer whose callback is slow."""

    TIMER = TimerSpec("timer", TimeDomain.WATERMARK)

    def __init__(self, seen_file: str) -> None:
        self._seen_file = seen_file

    def process(self, element, timestamp=beam.DoFn.TimestampParam, timer=beam.DoFn.TimerParam(TIMER)):
        with open(self._seen_file, "a", encoding="utf-8") as f:
            f.write(element[1] + "\n")
        timer.set(timestamp + 1)
        yield element[1]

    @on_timer(TIMER)
    def slow_callback(self) -> None:
        time.sleep(0.3)  # longer than two of Prism's progress reports: it asks for a split


def _processed(options: PipelineOptions, runner, seen_file: Path) -> collections.Counter:
    # Each step brings data for new keys while the previous step's timers fire: mixed bundles.
    stream = TestStream()
    for step in range(STEPS):
        stream = stream.add_elements([
            TimestampedValue((f"k{(step * 7 + i) % KEYS}", f"e{step * PER_STEP + i}"), step * 10 + i)
            for i in range(PER_STEP)
        ]).advance_watermark_to(step * 10 + 9)
    stream = stream.advance_watermark_to_infinity()
    with beam.Pipeline(runner=runner, options=options) as p:
        _ = (p
             | stream
             # Prism panics on a stateful DoFn right after TestStream (apache/beam#36965).
             | beam.Map(lambda kv: kv).with_output_types(beam.typehints.Tuple[str, str])
             | beam.ParDo(RecordSlowTimersFn(str(seen_file))))
    return collections.Counter(seen_file.read_text(encoding="utf-8").split())


def _prism_options(*args: str) -> PipelineOptions:
    return PipelineOptions(["--streaming", "--environment_type=LOOPBACK",
                            f"--prism_location={prism.binary()}", *args])


def test_prism_splits_redeliver_processed_records(tmp_path):
    """The upstream bug, with Prism's default splitting (what `resolve` turns off).

    A split needs Prism to ask for one while a slow timer runs, which depends on scheduling: one run of
    this graph showed no re-delivery in a CI run (1 of about 20 runs), so the canary fails only when
    none of ATTEMPTS runs re-delivers.
    """
    from apache_beam.runners.portability.prism_runner import PrismRunner

    for attempt in range(ATTEMPTS):
        seen = _processed(_prism_options(), PrismRunner(), tmp_path / f"seen-{attempt}.txt")
        assert len(seen) == STEPS * PER_STEP
        if any(n > 1 for n in seen.values()):
            return
    pytest.fail(f"Prism re-delivered nothing after a split in {ATTEMPTS} runs: drop prism.DISABLE_SPLITS")


def test_resolved_prism_processes_each_record_once(tmp_path):
    options = _prism_options()
    runner, _ = prism.resolve(options)
    assert prism.DISABLE_SPLITS in options.view_as(DebugOptions).experiments

    seen = _processed(options, runner, tmp_path / "seen.txt")
    assert len(seen) == STEPS * PER_STEP
    assert all(n == 1 for n in seen.values()), sorted(e for e, n in seen.items() if n > 1)
