"""ExcludeRecords: the quality filter keeps good readings and counts the others as excluded."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from transforms.exclude import ExcludeRecords


def test_quality_other_than_good_is_excluded_and_counted(run_batch, count_of):
    readings = [{"id": i, "quality": q} for i, q in enumerate(["good", "bad", "good", "uncertain", None, "GOOD"])]

    def build(p):
        kept = p | beam.Create(readings) | ExcludeRecords(lambda r: r["quality"] == "good")
        assert_that(kept | beam.Map(lambda r: r["id"]), equal_to([0, 2]))

    assert count_of(run_batch(build), "records_excluded") == 4
