"""DeduplicateEvents: out-of-order copies, horizon buckets, the same answer in batch and streaming."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from kappaflow import prism
from transforms.dedup import DedupConfig, DeduplicateEvents


def copy(event_id: str, t: float, n: int) -> TimestampedValue:
    return TimestampedValue({"event_id": event_id, "copy": n}, t)


def dedup(p, stream: TestStream, horizon: float):
    return (
        p
        | stream
        | DeduplicateEvents(lambda e: e["event_id"], DedupConfig(horizon_seconds=horizon))
        | beam.Map(lambda e: (e["event_id"], e["copy"]))
    )


def test_out_of_order_duplicates_are_dropped(run_streaming, count_of):
    stream = (
        TestStream()
        .add_elements([copy("a", 100, 1), copy("b", 200, 1)])
        .advance_watermark_to(150)
        .add_elements([copy("a", 90, 2), copy("a", 100, 3), copy("b", 50, 2)])  # earlier / same time
        .add_elements([copy("c", 120, 1)])
        .advance_watermark_to_infinity()
    )

    def build(p):
        assert_that(dedup(p, stream, 3600), equal_to([("a", 1), ("b", 1), ("c", 1)]))

    result = run_streaming(build)
    assert count_of(result, "duplicates") == 3


# Copies 500 s apart in one 600 s bucket, copies 200 s apart across a bucket edge, and a copy that
# arrives long after its twin: batch and streaming must agree on all of them.
BUCKET_CASES = [("x", 610, 1), ("x", 1110, 2), ("y", 1190, 1), ("y", 1210, 2), ("z", 30, 1), ("z", 40, 2)]


def test_copies_in_one_bucket_are_duplicates_however_far_apart_they_arrive(run_streaming, count_of):
    stream = (
        TestStream()
        .add_elements([copy(k, t, n) for k, t, n in BUCKET_CASES[:4]] + [copy("z", 30, 1)])
        .advance_watermark_to(1199)      # z's bucket [0, 600) is long closed, within its lateness
        .add_elements([copy("z", 40, 2)])
        .advance_watermark_to_infinity()
    )

    def build(p):
        assert_that(dedup(p, stream, 600), equal_to([("x", 1), ("y", 1), ("y", 2), ("z", 1)]))

    result = run_streaming(build)
    assert count_of(result, "duplicates") == 2


def test_batch_gives_the_streaming_answer_on_buckets(run_batch, count_of):
    def build(p):
        out = (p | beam.Create([copy(k, t, n) for k, t, n in BUCKET_CASES])
               | DeduplicateEvents(lambda e: e["event_id"], DedupConfig(horizon_seconds=600))
               | beam.Map(lambda e: e["event_id"]))
        assert_that(out, equal_to(["x", "y", "y", "z"]))

    result = run_batch(build)
    assert count_of(result, "duplicates") == 2


def test_batch_keeps_one_copy_per_key(run_batch, count_of):
    events = [TimestampedValue({"event_id": k, "copy": 0}, t)
              for k, t in [("a", 10), ("b", 20), ("a", 15), ("a", 5), ("c", 30), ("b", 20)]]

    def build(p):
        ids = (p | beam.Create(events)
               | DeduplicateEvents(lambda e: e["event_id"], DedupConfig(60))
               | beam.Map(lambda e: e["event_id"]))
        assert_that(ids, equal_to(["a", "b", "c"]))

    result = run_batch(build)
    assert count_of(result, "duplicates") == 3


@pytest.mark.parametrize("horizon", [0, -1])
def test_horizon_must_be_positive(horizon):
    with pytest.raises(ValueError):
        DedupConfig(horizon_seconds=horizon)


def test_on_prism_batch_the_earliest_copy_wins_whichever_bundle_brings_it(count_of):
    """Prism runs a bounded pipeline's triggers as values arrive: the copies of a key that reached
    the dedup in two bundles were two panes, and the first (the later copy here) won for every key.
    kappaflow's Prism runner gives a bounded run one pane per window (kappaflow/prism.py), as batch
    runners do."""
    options = PipelineOptions()  # batch: --streaming would make Prism treat it as a stream
    runner, _ = prism.resolve(options)
    p = TestPipeline(runner=runner, options=options)
    # Stock Prism ran these in the order of their names: the later copies reached the dedup first.
    later = p | "A" >> beam.Create([copy(f"k{i}", 100 + i, 1) for i in range(200)])
    earlier = p | "B" >> beam.Create([copy(f"k{i}", 50 + i, 0) for i in range(200)])
    winners = ((later, earlier) | beam.Flatten()
               | DeduplicateEvents(lambda e: e["event_id"], DedupConfig(3600))
               | beam.Map(lambda e: (e["event_id"], e["copy"])))
    assert_that(winners, equal_to([(f"k{i}", 0) for i in range(200)]))
    result = p.run()
    result.wait_until_finish()
    assert count_of(result, "duplicates") == 200
