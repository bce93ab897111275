"""A small reference table from files, keyed for a side input (transforms/enrich_side_input.py)."""

from __future__ import annotations

from typing import Any

import apache_beam as beam

from io_connectors.files import expand_pattern, read_records
from kappaflow.core.records import payload_text

__all__ = ["ReadReferenceTable"]


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
