"""Workarounds for six defects of Beam's local runners, applied by the launcher for those runners.

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

5. Batch peak memory in the FnApiRunner's shuffle. Its embedded worker's data channel keeps every
output of a stage until the runner has read the last one (apache_beam/runners/worker/
data_plane.py, InMemoryDataChannel.input_elements), while the runner decodes them into a
GroupByKey's table; that table is then encoded whole into an output stream before it is dropped
(apache_beam/runners/portability/fn_api_runner/execution.py, GroupingBuffer.partition), and the
stream copied into bytes. The dedup's grouping holds every record of a batch, so each of these
added a few hundred MB at 1M events. Besides, each value decoded into the table brought its own
copy of its window (a tuple, an IntervalWindow and two Timestamps, ~170 bytes), where the dedup
has one window per hour of event time. The channel lets go of each output once the runner has it,
a windowed grouping's values share their windows, and its table is emptied as it is encoded, into
chunks of 16 MiB.

6. The FnApiRunner runs every Flatten of two or more inputs in the runner
(apache_beam/runners/portability/fn_api_runner/translations.py, sink_flattens: "TODO: Actually
attempt to sink rather than always materialize"): each input is encoded into a buffer, and the
flatten's consumers decoded it in a stage of their own. RouteTooLateRecords merges its two routes
with a Flatten, so every record of a batch run was encoded and decoded once more than it is
shuffled, and the buffer held a copy of every record (200k-event batch peak RSS 388 -> 347 MB
with this workaround; wall time within the machine's spread). After fusion, a flatten whose inputs
all ended up in one stage, and whose reader's stage needs nothing else, runs in the SDK inside that
stage, as Beam's SDK workers can (bundle_processor.create_flatten).

Each is written for one Beam version and applied only there: on another Beam it is skipped with a
warning, and tests/test_beam_workarounds.py reproduces each defect (a canary that fails once Beam
fixes it) so the workaround can be re-checked, re-pinned or deleted.
"""

from __future__ import annotations

import logging
import threading

import apache_beam
from apache_beam.portability.api import beam_fn_api_pb2
from apache_beam.runners.worker import bundle_processor
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
LEAN_BATCH_SHUFFLE_FOR = "2.70.0"
FLATTENS_IN_STAGES_FOR = "2.70.0"


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


_GROUPED_CHUNK_BYTES = 16 << 20


def lean_batch_shuffle() -> None:
    """The FnApiRunner's batch shuffle, leaner (see 5. above): the data channel lets go of what the
    runner read; a windowed grouping's table shares one windows tuple per window among its values,
    and is emptied as partition() encodes it, into chunks of _GROUPED_CHUNK_BYTES. Beam's
    GroupingBuffer.append and partition otherwise, line for line."""
    from apache_beam.coders.coder_impl import create_InputStream, create_OutputStream
    from apache_beam.runners.portability.fn_api_runner import execution

    grouping = execution.GroupingBuffer
    if getattr(grouping.partition, "lean", False) or not written_for(LEAN_BATCH_SHUFFLE_FOR, "lean_batch_shuffle"):
        return
    _release_read_outputs()
    original_append, original_partition = grouping.append, grouping.partition

    def append(self, elements_data: bytes) -> None:
        if self._grouped_output or self._windowing.is_default():
            return original_append(self, elements_data)  # kappaflow's large groupings are windowed
        input_stream = create_InputStream(elements_data)
        coder_impl = self._pre_grouped_coder.get_impl()
        key_coder_impl = self._key_coder.get_impl()
        shared = self.__dict__.setdefault("_shared_windows", {})  # a few windows for a million values
        while input_stream.size() > 0:
            windowed_key_value = coder_impl.decode_from_stream(input_stream, True)
            key, value = windowed_key_value.value
            windowed = windowed_key_value.with_value(value)
            windowed.windows = shared.setdefault(windowed.windows, windowed.windows)
            self._table[key_coder_impl.encode(key)].append(windowed)

    def partition(self, n: int):
        if self._grouped_output or self._windowing.is_default():
            return original_partition(self, n)
        windowed_key_values = trigger.create_trigger_driver(self._windowing, True).process_entire_key
        coder_impl = self._post_grouped_coder.get_impl()
        key_coder_impl = self._key_coder.get_impl()
        chunks: list[list[bytes]] = [[] for _ in range(n)]
        streams = [create_OutputStream() for _ in range(n)]
        table = self._table
        for idx, encoded_key in enumerate(list(table)):
            stream = streams[idx % n]
            for wkvs in windowed_key_values(key_coder_impl.decode(encoded_key), table.pop(encoded_key)):
                coder_impl.encode_to_stream(wkvs, stream, True)
            if stream.size() >= _GROUPED_CHUNK_BYTES:  # whole elements per chunk, as the data plane sends them
                chunks[idx % n].append(stream.get())
                streams[idx % n] = create_OutputStream()
        for ix, stream in enumerate(streams):
            if stream.size() or not chunks[ix]:
                chunks[ix].append(stream.get())
        self._grouped_output = chunks
        return chunks

    partition.lean = True
    grouping.append, grouping.partition = append, partition


def _release_read_outputs() -> None:
    """InMemoryDataChannel.input_elements as Beam's, less the list that keeps what was read."""
    from apache_beam.runners.worker import data_plane

    def input_elements(self, instruction_id, unused_expected_inputs, abort_callback=None):
        other_inputs = []
        while self._inputs:  # what arrives meanwhile is read too, as Beam's loop over the list does
            pending, self._inputs = self._inputs, []
            pending.reverse()
            while pending:
                element = pending.pop()
                if element.instruction_id != instruction_id:
                    other_inputs.append(element)
                elif isinstance(element, beam_fn_api_pb2.Elements.Timers):
                    if not element.is_last:
                        yield element
                elif isinstance(element, beam_fn_api_pb2.Elements.Data) and (element.data or element.is_last):
                    yield element
        self._inputs = other_inputs

    data_plane.InMemoryDataChannel.input_elements = input_elements


def flattens_inside_stages() -> None:
    """The FnApiRunner's fusion as Beam's, then each materialized flatten that can be is moved
    into the stage that writes all of its inputs (see 6. above)."""
    from apache_beam.runners.portability.fn_api_runner import translations

    if getattr(translations.greedily_fuse, "flattens_inside", False) or not written_for(
            FLATTENS_IN_STAGES_FOR, "flattens_inside_stages"):
        return
    original = translations.greedily_fuse

    def greedily_fuse(stages, pipeline_context):
        stages = list(stages)
        # sink_flattens ran before: each flatten is a read stage of its own, fed by its writes.
        flatten_buffers = {t.spec.payload for stage in stages for t in stage.transforms
                           if t.spec.urn == bundle_processor.DATA_INPUT_URN
                           and translations.split_buffer_id(t.spec.payload)[0] == "materialize"}
        return _run_flattens_in_writer_stages(original(stages, pipeline_context), flatten_buffers, pipeline_context)

    greedily_fuse.flattens_inside = True
    translations.greedily_fuse = greedily_fuse


def _run_flattens_in_writer_stages(stages, flatten_buffers: set, context) -> frozenset:
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_runner_api_pb2

    stages = set(stages)
    while True:
        writers: dict = {}  # buffer → (stages writing it, write transforms)
        readers: dict = {}  # buffer → [(stage, read transform)]
        for stage in stages:
            for t in stage.transforms:
                if t.spec.payload in flatten_buffers and t.spec.urn == bundle_processor.DATA_OUTPUT_URN:
                    entry = writers.setdefault(t.spec.payload, (set(), []))
                    entry[0].add(stage)
                    entry[1].append(t)
                elif t.spec.payload in flatten_buffers and t.spec.urn == bundle_processor.DATA_INPUT_URN:
                    readers.setdefault(t.spec.payload, []).append((stage, t))
        for buffer, (writer_stages, writes) in writers.items():
            if len(writer_stages) != 1 or len(readers.get(buffer, ())) != 1:
                continue
            (writer,), ((reader, read),) = writer_stages, readers[buffer]
            if (reader is writer or reader.forced_root or list(reader.side_inputs())
                    or not reader.must_follow <= {writer} or reader.environment not in (None, writer.environment)
                    or sum(t.spec.urn == bundle_processor.DATA_INPUT_URN for t in reader.transforms) != 1):
                continue
            flatten = beam_runner_api_pb2.PTransform(
                unique_name=read.unique_name.rsplit("/", 1)[0],
                spec=beam_runner_api_pb2.FunctionSpec(urn=common_urns.primitives.FLATTEN.urn),
                inputs={str(i): pcoll for i, w in enumerate(writes) for pcoll in w.inputs.values()},
                outputs=dict(read.outputs), environment_id=writer.environment)
            writer.transforms = [t for t in writer.transforms if t not in writes]
            reader.transforms = [flatten if t is read else t for t in reader.transforms]
            merged = writer.fuse(reader, context)
            merged.must_follow = (writer.must_follow | reader.must_follow) - {writer, reader}
            stages -= {writer, reader}
            for stage in stages:
                if stage.must_follow & {writer, reader}:
                    stage.must_follow = (stage.must_follow - {writer, reader}) | {merged}
            stages.add(merged)
            break
        else:
            return frozenset(stages)
