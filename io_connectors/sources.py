"""Choose a source from the input URL and the run's mode."""

from __future__ import annotations

from typing import Callable, Optional

import apache_beam as beam
from apache_beam.io import fileio

from io_connectors.files import expand_pattern, file_format, read_records
from io_connectors.replay import ReplayConfig, ReplayFiles
from transforms.records import RawRecord

__all__ = ["ReadFiles", "ReadInput"]


class ReadFiles(beam.PTransform):
    """Files (globs, comma-separated) → bounded PCollection of RawRecords."""

    def __init__(self, pattern: str, ingest_time_field: Optional[str] = None) -> None:
        super().__init__()
        self._pattern = pattern
        self._ingest_time_field = ingest_time_field

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        patterns = [p.strip() for p in self._pattern.split(",") if p.strip()]
        for pattern in patterns:
            file_format(pattern)  # the extension decides the reader: fail at construction
            if "://" not in pattern:
                expand_pattern(pattern)  # local: say now that nothing matches, not on a worker
        # Remote globs (gs://...) are matched when the job runs: a template is built elsewhere.
        return (
            pbegin
            | "Patterns" >> beam.Create(patterns)
            | "MatchFiles" >> fileio.MatchAll(fileio.EmptyMatchTreatment.DISALLOW)
            | "Paths" >> beam.Map(lambda metadata: metadata.path)
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadRecords" >> beam.FlatMap(read_records, self._ingest_time_field)
        )


class ReadInput(beam.PTransform):
    """`--input` → RawRecords: files in batch, the same files replayed in event time when
    streaming. `ingest_time_field`: a top-level field of the files that holds the ingest time."""

    def __init__(
        self,
        url: str,
        streaming: bool,
        event_time: Callable[[RawRecord], Optional[float]],
        replay: ReplayConfig = ReplayConfig(),
        ingest_time_field: Optional[str] = None,
    ) -> None:
        super().__init__()
        self._url = url
        self._streaming = streaming
        self._event_time = event_time
        self._replay = replay
        self._ingest_time_field = ingest_time_field

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        if self._streaming:
            return pbegin | "ReplayFiles" >> ReplayFiles(
                self._url, self._event_time, self._replay, self._ingest_time_field)
        return pbegin | "ReadFiles" >> ReadFiles(self._url, self._ingest_time_field)
