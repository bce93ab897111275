"""Enrich events from a small reference table broadcast as a side input (read it with
io_connectors/reference_files.py)."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from kappaflow.core import metrics
from transforms.enrich_database import LookupSpec

__all__ = ["EnrichFromSideInput"]


class EnrichFromSideInput(beam.PTransform):
    """Events → events with `spec.columns` copied from the side table, or `spec.defaults`."""

    def __init__(self, table: beam.PCollection, spec: LookupSpec) -> None:
        super().__init__()
        self._table = table
        self._spec = spec

    def expand(self, events: beam.PCollection) -> beam.PCollection:
        spec = self._spec
        missing = Metrics.counter(metrics.NAMESPACE, "lookup_key_missing")

        def enrich(event: dict, table: dict) -> dict:
            row = table.get(event.get(spec.event_field))
            if row is None:
                missing.inc()
            out = dict(event)
            spec.apply(out, row)
            return out

        return events | "Enrich" >> beam.Map(enrich, table=beam.pvalue.AsDict(self._table))
