"""DeduplicateEvents: out-of-order copies, expiry anchored at the largest event time seen."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

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


def test_expiry_is_anchored_at_the_largest_event_time(run_streaming, count_of):
    horizon = 600
    stream = (
        TestStream()
        .add_elements([copy("x", 100, 1)])             # kept
        .add_elements([copy("x", 3000, 2)])            # duplicate, moves expiry to 3000 + 600
        .advance_watermark_to(100 + horizon + 1)      # first-seen anchoring would forget x here
        .add_elements([copy("x", 2000, 3)])            # must still be a duplicate
        .advance_watermark_to(3000 + horizon + 1)     # now x is forgotten
        .add_elements([copy("x", 4000, 4)])            # a new copy passes
        .advance_watermark_to_infinity()
    )

    def build(p):
        assert_that(dedup(p, stream, horizon), equal_to([("x", 1), ("x", 4)]))

    result = run_streaming(build)
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
