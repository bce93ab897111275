"""Workarounds for four defects of Beam's local runners, applied by the launcher for those runners.

1. Lost metrics in the BundleBasedDirectRunner (the streaming DirectRunner). Each executor thread keeps one StateSampler, whose `scoped_state` caches the ScopedState per step
together with the MetricsContainer of the FIRST bundle it saw. Later bundles pass a new container
that is ignored, so their counter updates land in a container that was already committed: a
streaming run reports only its first bundle per thread (apache_beam/runners/worker/statesampler.py,
apache_beam/runners/direct/executor.py). Our accounting is built from counters, so we refresh
the cached state whenever a bundle brings its own container.

2. The FnApiRunner's embedded worker caches user state and sizes every cached value with a deep
object traversal (apache_beam/runners/worker/statecache.py, get_deep_size) that walks far beyond
the value: in a 10k-event clickstream profile it took 27 of 31 seconds. The cache only saves
in-process state reads, so the batch runner runs without it (6x faster end to end).

3. The FnApiRunner groups a batch GroupByKey in windows other than the global one through the
streaming trigger machinery (apache_beam/transforms/trigger.py, create_trigger_driver: only the
global window has a batch driver), replaying every trigger element by element: a windowed
GroupByKey with a key per event ran at a tenth of the speed of the rest of the pipeline. In batch
every value of a key is there at once, and Beam's Java batch runners emit each window's values as
its one ON_TIME pane; for non-merging windows, so do we (tests/test_beam_workarounds.py).

4. Every bundle an SDK worker runs starts a thread that samples which step is running (for Beam's
per-step execution-time metrics and lull warnings) and joins it at the bundle's end
(apache_beam/runners/worker/statesampler_fast.pyx). Streaming runners run many short bundles: in a
100k-event replay on Prism, starting and joining that thread (each waits for the other thread to
get the GIL from the worker's gRPC threads) took 13 % of the bundle thread's time. kappaflow reads
none of those metrics, so the workers in the launcher's process (LOOPBACK, the FnApiRunner) keep
the sampler's step tracking but start no thread.

Each is written for one Beam version and applied only there: on another Beam it is skipped with a
warning, and tests/test_beam_workarounds.py reproduces each defect (a canary that fails once Beam
fixes it) so the workaround can be re-checked, re-pinned or deleted.
"""

from __future__ import annotations

import logging
import threading

import apache_beam
from apache_beam.runners.worker import statesampler
from apache_beam.transforms import trigger
from apache_beam.transforms.window import NonMergingWindowFn, TimestampCombiner
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

_LOG = logging.getLogger(__name__)
_PATCHED = False
_SAMPLER_PATCHED = False
_warned: set[str] = set()

# The Beam version each workaround was written for (and its canary test run against).
KEEP_STREAMING_METRICS_FOR = "2.70.0"
NO_EMBEDDED_STATE_CACHE_FOR = "2.70.0"
ONE_PANE_PER_WINDOW_FOR = "2.70.0"  # a newer Beam may have a batch driver of its own
NO_SAMPLING_THREAD_FOR = "2.70.0"


def written_for(version: str, workaround: str) -> bool:
    """True on the Beam `version`; otherwise warn (once per workaround) that it is skipped."""
    if apache_beam.__version__ == version:
        return True
    if workaround not in _warned:
        _warned.add(workaround)
        _LOG.warning("Beam %s: the workaround %s (kappaflow/beam_workarounds.py) was written for Beam %s and is "
                     "skipped; run tests/test_beam_workarounds.py to see whether the defect is still there",
                     apache_beam.__version__, workaround, version)
    return False


def disable_embedded_state_cache() -> None:
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    if written_for(NO_EMBEDDED_STATE_CACHE_FOR, "disable_embedded_state_cache"):
        worker_handlers.STATE_CACHE_SIZE_MB = 0
_original_create_trigger_driver = trigger.create_trigger_driver


class OnePanePerWindowDriver(trigger.TriggerDriver):
    """Batch: a key's values grouped by window, one ON_TIME pane each, at the timestamp the
    windowing's timestamp combiner gives."""

    def __init__(self, windowing) -> None:
        self._combiner = windowing.timestamp_combiner

    def process_elements(self, state, windowed_values, output_watermark, input_watermark=MIN_TIMESTAMP):
        panes: dict = {}
        for wv in windowed_values:
            for window in wv.windows:
                pane = panes.get(window)
                if pane is None:
                    panes[window] = [[wv.value], wv.timestamp, wv.timestamp]
                else:
                    pane[0].append(wv.value)
                    pane[1] = min(pane[1], wv.timestamp)
                    pane[2] = max(pane[2], wv.timestamp)
        for window, (values, earliest, latest) in panes.items():
            if self._combiner == TimestampCombiner.OUTPUT_AT_EARLIEST:
                timestamp = earliest
            elif self._combiner == TimestampCombiner.OUTPUT_AT_LATEST:
                timestamp = latest
            else:
                timestamp = window.max_timestamp()
            yield WindowedValue(values, timestamp, (window,), trigger.BatchGlobalTriggerDriver.ONLY_FIRING)

    def process_timer(self, window_id, name, time_domain, timestamp, state, input_watermark=None):
        raise TypeError("a batch pane per window sets no timers")


def one_pane_per_window_in_batch() -> None:
    """Patch the FnApiRunner's (batch-only) grouping; every other runner is left as it is."""
    if (not written_for(ONE_PANE_PER_WINDOW_FOR, "one_pane_per_window_in_batch")
            or trigger.create_trigger_driver is not _original_create_trigger_driver):
        return
    original = _original_create_trigger_driver

    def create_trigger_driver(windowing, is_batch=False, phased_combine_fn=None, clock=None):
        if is_batch and isinstance(windowing.windowfn, NonMergingWindowFn) and not windowing.is_default():
            driver = OnePanePerWindowDriver(windowing)
            return trigger.CombiningTriggerDriver(phased_combine_fn, driver) if phased_combine_fn else driver
        return original(windowing, is_batch, phased_combine_fn, clock)

    trigger.create_trigger_driver = create_trigger_driver


def keep_streaming_metrics() -> None:
    global _PATCHED
    if _PATCHED or not written_for(KEEP_STREAMING_METRICS_FOR, "keep_streaming_metrics"):
        return
    original = statesampler.StateSampler.scoped_state

    def scoped_state(self, name_context, state_name, io_target=None, metrics_container=None):
        state = original(self, name_context, state_name, io_target, metrics_container)
        if metrics_container is not None and state.metrics_container is not metrics_container:
            for key, cached in list(self._states_by_name.items()):
                if cached is state:
                    del self._states_by_name[key]
            state = original(self, name_context, state_name, io_target, metrics_container)
        return state

    statesampler.StateSampler.scoped_state = scoped_state
    _PATCHED = True


def no_sampling_thread() -> None:
    """StateSampler.start/stop as Beam's, less the sampling thread (see 4. above)."""
    global _SAMPLER_PATCHED
    if _SAMPLER_PATCHED or not written_for(NO_SAMPLING_THREAD_FOR, "no_sampling_thread"):
        return

    def start(self) -> None:
        self.tracked_thread = threading.current_thread()
        statesampler.set_current_tracker(self)
        self.started = True

    def stop(self) -> None:
        statesampler.set_current_tracker(None)
        self.finished = True

    statesampler.StateSampler.start, statesampler.StateSampler.stop = start, stop
    _SAMPLER_PATCHED = True
