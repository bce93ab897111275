"""Staged loads: rows go to files under `--temp_location` bundle by bundle, and each destination
table gets ONE load job per run in batch (per trigger firing in streaming), whatever the number of
bundles.

BigQuery allows 1,500 load jobs per table per day: a load per bundle fails a backfill of thousands
of bundles on quota, or burns the quota of everyone else writing that table.

    (destination, line) → StageFilesFn: one file per destination per bundle → (destination, (path, lines))
      → [streaming: a firing every N seconds of processing time] → GroupByKey(destination)
      → one load of all of a destination's files (LoadStagedFilesFn) or a MERGE (bigquery_cdc.py)

The load job's id is derived from its files: a retried step that already loaded them finds the
job instead of appending the rows twice (real BigQuery refuses a second job with the same id).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
import uuid
from typing import Any, Callable, Iterable, Iterator, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger, window

from io_connectors.batched_write import SinkCounters
from io_connectors.bigquery_client import bigquery_client
from kappaflow.core import metrics
from kappaflow.core.retry import RetryPolicy

__all__ = ["StageFilesFn", "StageForLoads", "LoadStagedFilesFn", "load_staged_files", "delete_staged",
           "STAGING_DIR", "MAX_URIS_PER_JOB"]

_LOG = logging.getLogger(__name__)
STAGING_DIR = "kappaflow-bq-loads"
MAX_URIS_PER_JOB = 10_000  # BigQuery's limit of source URIs per load job


class StageFilesFn(beam.DoFn):
    """(destination, newline-terminated bytes) → one staged file per destination per bundle under
    `temp_location`; emits (destination, (path, lines)) when the bundle finishes."""

    def __init__(self, temp_location: str) -> None:
        self._root = FileSystems.join(temp_location, STAGING_DIR, uuid.uuid4().hex)  # one dir per pipeline
        self._files = Metrics.counter(metrics.NAMESPACE, "bigquery_staged_files")

    def start_bundle(self) -> None:
        self._open: dict[str, tuple[str, Any, list[int]]] = {}

    def process(self, element: tuple[str, bytes]) -> None:
        destination, line = element
        staged = self._open.get(destination)
        if staged is None:
            path = FileSystems.join(self._root, f"{uuid.uuid4().hex}.jsonl")
            staged = self._open[destination] = (path, FileSystems.create(path), [0])
            self._files.inc()
        staged[1].write(line)
        staged[2][0] += 1

    def finish_bundle(self) -> Iterator[Any]:
        opened, self._open = self._open, {}
        for destination, (path, handle, lines) in opened.items():
            handle.close()
            yield window.GlobalWindows.windowed_value((destination, (path, lines[0])), timestamp=time.time())


class StageForLoads(beam.PTransform):
    """(destination, line) → (destination, [(path, lines), ...]): every staged file of a destination
    in one element, once per run in batch; in streaming every `firing_seconds` of processing time
    (or every `files_per_firing` staged files, when given) and when the input ends (a bounded
    replay, a drain). Which of the two is the runtime's choice (kappaflow/wiring.py), per runner."""

    def __init__(self, temp_location: str, streaming: bool, firing_seconds: int,
                 files_per_firing: Optional[int] = None) -> None:
        super().__init__()
        if firing_seconds < 1:
            raise ValueError("--bigquery_firing_seconds must be >= 1")
        if files_per_firing is not None and files_per_firing < 1:
            raise ValueError("files_per_firing must be >= 1")
        self._temp_location = temp_location
        self._streaming = streaming
        self._firing_seconds = firing_seconds
        self._files_per_firing = files_per_firing

    def expand(self, lines: beam.PCollection) -> beam.PCollection:
        # Files outlive bundles, not windows: stage in the global window.
        staged = (lines | "Global" >> beam.WindowInto(window.GlobalWindows())
                  | "Stage" >> beam.ParDo(StageFilesFn(self._temp_location)))
        if self._streaming:  # the global window never closes: fire repeatedly
            every = (trigger.AfterCount(self._files_per_firing) if self._files_per_firing
                     else trigger.AfterProcessingTime(self._firing_seconds))
            staged = staged | "EveryFiring" >> beam.WindowInto(
                window.GlobalWindows(), trigger=trigger.Repeatedly(trigger.AfterAny(every, trigger.AfterWatermark())),
                accumulation_mode=trigger.AccumulationMode.DISCARDING)
        return staged | "ByDestination" >> beam.GroupByKey()


def _job_id(prefix: str, paths: Iterable[str]) -> str:
    digest = hashlib.sha256("\n".join(sorted(paths)).encode("utf-8")).hexdigest()[:40]
    return f"{prefix}_{digest}"


def load_staged_files(client: Any, table_id: str, paths: list[str], job_config: Any, job_prefix: str) -> None:
    """One load job of all `paths` into `table_id` (chunks of MAX_URIS_PER_JOB for gs://)."""
    from google.api_core import exceptions

    def run(make_job: Callable[[str], Any], job_id: str) -> None:
        try:
            job = make_job(job_id)
        except exceptions.Conflict:  # this very load already ran: wait for it, do not append again
            job = client.get_job(job_id)
        job.result(timeout=600)

    if all(p.startswith("gs://") for p in paths):
        for start in range(0, len(paths), MAX_URIS_PER_JOB):
            chunk = paths[start:start + MAX_URIS_PER_JOB]
            run(lambda job_id: client.load_table_from_uri(chunk, table_id, job_id=job_id, job_config=job_config),
                _job_id(job_prefix, chunk))
        return
    # Local staging (tests, DirectRunner): the files go up in one request, concatenated.
    with tempfile.TemporaryFile() as combined:
        for path in paths:
            with FileSystems.open(path, compression_type="uncompressed") as handle:
                shutil.copyfileobj(handle, combined)
        combined.seek(0)
        run(lambda job_id: client.load_table_from_file(combined, table_id, job_id=job_id, job_config=job_config,
                                                       rewind=True), _job_id(job_prefix, paths))


def delete_staged(paths: list[str]) -> None:
    try:
        FileSystems.delete(paths)
    except Exception as err:  # noqa: BLE001 - leftovers under temp_location are harmless
        _LOG.warning("could not delete %d staged files: %s", len(paths), err)
    for directory in {os.path.dirname(p) for p in paths if "://" not in p}:
        try:
            os.rmdir(directory)
        except OSError:
            pass  # other bundles' files are still there


class LoadStagedFilesFn(beam.DoFn):
    """(table_id, [(path, lines)]) → one load job appending every staged file to the table."""

    def __init__(self, project: str, endpoint: Optional[str], retry: RetryPolicy, counter: str,
                 prepare_table: Callable[[Any, str], None]) -> None:
        self._project = project
        self._endpoint = endpoint
        self._retry = retry
        self._prepare_table = prepare_table
        self._count = SinkCounters(counter)
        self._loads = Metrics.counter(metrics.NAMESPACE, "bigquery_load_jobs")

    def setup(self) -> None:
        self._client = bigquery_client(self._project, self._endpoint)

    def teardown(self) -> None:
        self._client.close()

    def process(self, element: tuple[str, Iterable[tuple[str, int]]]) -> None:
        from google.cloud import bigquery

        table_id, staged = element
        staged = sorted(staged)
        paths = [path for path, _ in staged]
        config = bigquery.LoadJobConfig(source_format="NEWLINE_DELIMITED_JSON", write_disposition="WRITE_APPEND")
        self._retry.call(f"loading {len(paths)} files into {table_id}", lambda: (
            self._prepare_table(self._client, table_id),
            load_staged_files(self._client, table_id, paths, config, "kappaflow_load")),
            on_retry=self._count.retries.inc)
        self._loads.inc()
        self._count.written.inc(sum(lines for _, lines in staged))
        delete_staged(paths)
