"""Beam's defects that kappaflow/beam_workarounds.py works around, each reproduced (a canary that
fails once Beam fixes it), and what each workaround changes."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

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


_STREAMING_COUNTS = textwrap.dedent("""
    import sys
    import apache_beam as beam
    from apache_beam.metrics import Metrics
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
    from apache_beam.testing.test_stream import TestStream

    if sys.argv[1] == "patched":
        from kappaflow import beam_workarounds
        beam_workarounds.keep_streaming_metrics()

    class CountFn(beam.DoFn):
        def __init__(self):
            self.seen = Metrics.counter("canary", "seen")

        def process(self, x):
            self.seen.inc()
            yield x

    stream = TestStream()
    for batch in range(5):  # five bundles of ten
        stream = stream.add_elements(list(range(batch * 10, batch * 10 + 10))).advance_watermark_to(batch * 10)
    p = beam.Pipeline(runner=BundleBasedDirectRunner(), options=PipelineOptions(["--streaming"]))
    _ = p | stream.advance_watermark_to_infinity() | beam.ParDo(CountFn())
    result = p.run()
    result.wait_until_finish()
    print(sum(c.committed or 0 for c in result.metrics().query(MetricsFilter().with_name("seen"))["counters"]))
""")


def _printed(script: str, mode: str) -> str:
    """What `script` prints, run "plain" or "patched" in a process of its own: a workaround patches
    Beam process-wide, and the tests here apply them."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", script, mode], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": root})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def _streaming_count(mode: str) -> int:
    return int(_printed(_STREAMING_COUNTS, mode).split()[-1])


def test_canary_the_streaming_direct_runner_reports_only_a_thread_s_first_bundle():
    # Fails once Beam's BundleBasedDirectRunner counts every bundle: then workaround 1 can go.
    assert _streaming_count("plain") < 50
    assert _streaming_count("patched") == 50


def test_canary_the_state_cache_weighs_a_value_with_everything_it_references():
    # Fails once Beam stops sizing cached state by deep traversal: then workaround 2 can go. Ten
    # small values that share one large list each weigh the whole list, so a 16 MB cache holds
    # one of them: the FnApiRunner's embedded worker pays that traversal on every state write.
    from apache_beam.runners.worker import statecache

    shared = [str(i) for i in range(200_000)]  # about 13 MB of objects
    cache = statecache.StateCache(16 << 20)
    for key in range(10):
        cache.put(key, {"key": key, "lookup": shared})
    assert cache.size() == 1


def test_a_workaround_written_for_another_beam_is_skipped_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(beam_workarounds, "_warned", set())
    with caplog.at_level(logging.WARNING, logger=beam_workarounds.__name__):
        assert not beam_workarounds.written_for("2.0.0", "some_workaround")
        assert not beam_workarounds.written_for("2.0.0", "some_workaround")
        assert beam_workarounds.written_for(beam.__version__, "some_workaround")
    assert len(caplog.records) == 1 and "written for Beam 2.0.0 and is skipped" in caplog.records[0].getMessage()


_SAMPLER_THREADS = textwrap.dedent("""
    import sys, threading
    from apache_beam.runners.worker import statesampler
    from apache_beam.utils.counters import CounterFactory

    if sys.argv[1] == "patched":
        from kappaflow import beam_workarounds
        beam_workarounds.no_sampling_thread()
    sampler = statesampler.StateSampler("stage", CounterFactory())
    before = threading.active_count()
    sampler.start()
    started = threading.active_count() - before
    state = sampler.scoped_state("step", "process")
    with state:
        tracked = statesampler.get_current_tracker() is sampler and sampler.current_state() is state
    sampler.stop()
    print(started, tracked, statesampler.get_current_tracker() is None, threading.active_count() - before)
""")


def test_canary_every_bundle_starts_and_joins_a_sampling_thread():
    # Fails once Beam samples without a thread per bundle: then workaround 4 can go. Patched, the
    # sampler still tracks the running step, and starts no thread.
    assert _printed(_SAMPLER_THREADS, "plain") == "1 True True 0"
    assert _printed(_SAMPLER_THREADS, "patched") == "0 True True 0"


_GROUPING = textwrap.dedent("""
    import sys
    from apache_beam import coders
    from apache_beam.coders.coder_impl import create_InputStream, create_OutputStream
    from apache_beam.coders.coders import IntervalWindowCoder
    from apache_beam.portability.api import beam_fn_api_pb2
    from apache_beam.runners.portability.fn_api_runner import execution
    from apache_beam.runners.worker import data_plane
    from apache_beam.transforms import core, window
    from apache_beam.utils.windowed_value import WindowedValue

    if sys.argv[1] == "patched":
        from kappaflow import beam_workarounds
        beam_workarounds.lean_batch_shuffle()

    # The data channel: what does it still hold once the runner has read the first output?
    channel = data_plane.InMemoryDataChannel()
    channel._inputs = [beam_fn_api_pb2.Elements.Data(instruction_id="b", transform_id="t", data=b"x" * 100)
                       for _ in range(3)]
    reading = channel.input_elements("b", ["t"])
    next(reading)
    held = len(channel._inputs)
    assert len(list(reading)) == 2 and channel._inputs == []

    # A windowed grouping: its values and windows, and what partition() gives.
    def windowed(coder):
        return coders.WindowedValueCoder(coder, IntervalWindowCoder())
    before = windowed(coders.TupleCoder([coders.StrUtf8Coder(), coders.VarIntCoder()]))
    after = windowed(coders.TupleCoder([coders.StrUtf8Coder(), coders.IterableCoder(coders.VarIntCoder())]))
    grouping = execution.GroupingBuffer(before, after, core.Windowing(window.FixedWindows(10)))
    out = create_OutputStream()
    for value, (key, t) in enumerate([("a", 1), ("b", 2), ("a", 3), ("a", 12), ("c", 15), ("b", 4)]):
        before.get_impl().encode_to_stream(
            WindowedValue((key, value), t, [window.IntervalWindow(t // 10 * 10, t // 10 * 10 + 10)]), out, True)
    grouping.append(out.get())
    windows = len({id(wv.windows) for values in grouping._table.values() for wv in values})
    grouped = []
    for part in grouping.partition(2):
        for chunk in part:
            stream = create_InputStream(chunk)
            while stream.size() > 0:
                wv = after.get_impl().decode_from_stream(stream, True)
                grouped.append((wv.value[0], sorted(wv.value[1]), wv.windows[0].start.micros // 10**6))
    print(held, windows, sorted(grouped), len(grouping._table))
""")


def test_canary_the_batch_shuffle_holds_what_was_read_and_a_window_per_value():
    # Fails once Beam's in-memory data channel lets go of what the runner read, or its grouping
    # shares windows among values: then workaround 5 can go. Patched, the grouping is the same.
    grouped = "[('a', [0, 2], 0), ('a', [3], 10), ('b', [1, 5], 0), ('c', [4], 10)] 0"
    assert _printed(_GROUPING, "plain") == f"3 6 {grouped}"  # all three held; a windows tuple per value
    assert _printed(_GROUPING, "patched") == f"0 2 {grouped}"


_FLATTENS = textwrap.dedent("""
    import sys
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.testing.util import assert_that, equal_to

    if sys.argv[1] == "patched":
        from kappaflow import beam_workarounds
        beam_workarounds.flattens_inside_stages()

    def build(p):
        numbers = p | beam.Create(range(10))
        split = numbers | "Split" >> beam.Map(lambda n: beam.pvalue.TaggedOutput("odd", n) if n % 2 else n).with_outputs(
            "odd", main="even")
        # both inputs from one stage: the flatten can run in it
        same_stage = (split.even, split.odd | "Negate" >> beam.Map(lambda n: -n)) | "SameStage" >> beam.Flatten()
        assert_that(same_stage | "Double" >> beam.Map(lambda n: 2 * n),
                    equal_to([0, -2, 4, -6, 8, -10, 12, -14, 16, -18]), label="CheckSameStage")
        # one input behind a GroupByKey: a stage of its own, the flatten stays in the runner
        grouped = (split.even | "Key" >> beam.Map(lambda n: (n % 3, n)) | beam.GroupByKey()
                   | "Sum" >> beam.Map(lambda kv: sum(kv[1])))
        across = (grouped, split.odd) | "AcrossStages" >> beam.Flatten()
        assert_that(across, equal_to([6, 10, 4, 1, 3, 5, 7, 9]), label="CheckAcrossStages")

    runner = fn_runner.FnApiRunner()
    with beam.Pipeline(runner=runner) as p:
        build(p)
    p = beam.Pipeline()
    build(p)
    _, stages = runner.create_stages(p.to_runner_api())
    names = [t.unique_name for s in stages for t in s.transforms if t.unique_name.startswith(("Same", "Across"))]
    in_runner = sorted(name for name in names if name.endswith("/Read"))
    in_sdk = sorted(name for name in names if name in ("SameStage", "AcrossStages"))
    print(in_runner, in_sdk)
""")


def test_canary_the_batch_runner_runs_every_flatten_in_the_runner():
    # Fails once the FnApiRunner runs a flatten in the stage that produces its inputs: then
    # workaround 6 can go. Patched, only the flatten fed by two stages stays in the runner; both
    # pipelines' assertions pass either way.
    assert _printed(_FLATTENS, "plain") == "['AcrossStages/Read', 'SameStage/Read'] []"
    assert _printed(_FLATTENS, "patched") == "['AcrossStages/Read'] ['SameStage']"
