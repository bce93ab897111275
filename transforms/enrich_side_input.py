"""Enrich events from a small reference table read from a file and broadcast as a side input."""

from __future__ import annotations

from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from io_connectors.files import expand_pattern, read_records
from transforms import metrics
from transforms.enrich_database import LookupSpec
from transforms.records import payload_text

__all__ = ["ReadReferenceTable", "EnrichFromSideInput"]


class ReadReferenceTable(beam.PTransform):
    """A JSONL/CSV/Avro/Parquet file → PCollection of (key, row) for `beam.pvalue.AsDict`."""

    def __init__(self, pattern: str, key_column: str) -> None:
        super().__init__()
        self._pattern = pattern
        self._key_column = key_column

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        import json

        key_column = self._key_column

        def keyed(payload: Any) -> tuple[Any, dict]:
            row = payload if isinstance(payload, dict) else json.loads(payload_text(payload))
            return row[key_column], row

        return (
            pbegin
            | "Files" >> beam.Create(expand_pattern(self._pattern))
            | "Read" >> beam.FlatMap(lambda path: (r.payload for r in read_records(path)))
            | "Key" >> beam.Map(keyed)
        )


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
