"""The one dead-letter sink of every pipeline: all stages' rejections, made into rows by one step,
one table, keyed upserts (transforms/dead_letters.DeadLetters collects them).

A dead letter the table itself refuses cannot go anywhere else: it is counted
(`dead_letters_failed`) and logged, and the launcher's accounting fails on it."""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics

from io_connectors.bigquery import BigQueryWriteConfig
from io_connectors.sinks import WriteTable
from kappaflow.core import metrics
from kappaflow.core.records import DEAD_LETTER_SCHEMA, Rejection
from transforms.dead_letters import CollectDeadLetters, ToDeadLetterRows

__all__ = ["WriteDeadLetters", "CountFailedDeadLettersFn"]

_LOG = logging.getLogger(__name__)


class CountFailedDeadLettersFn(beam.DoFn):
    """A dead letter the dead-letter table refused (the sink's own dead letter) → counted, logged."""

    def __init__(self) -> None:
        self._failed = Metrics.counter(metrics.NAMESPACE, metrics.DEAD_LETTERS_FAILED)

    def process(self, refused: Rejection) -> None:
        self._failed.inc()
        _LOG.error("a dead letter could not be written (%s)", refused.reason)


class WriteDeadLetters(beam.PTransform):
    """(the Rejections of every stage) → rows of `pipeline` in the `dead_letters` table at `url`.
    `id_field`: where the pipeline's records hold their id."""

    def __init__(self, url: str, pipeline: str, id_field: Optional[str] = None,
                 bigquery: Optional[BigQueryWriteConfig] = None) -> None:
        super().__init__()
        self._url = url
        self._pipeline = pipeline
        self._id_field = id_field
        self._bigquery = bigquery

    def expand(self, rejections: Sequence[beam.PCollection]) -> beam.PCollection:
        refused = (
            rejections
            | "Collect" >> CollectDeadLetters()
            | "ToRows" >> ToDeadLetterRows(self._pipeline, self._id_field)
            | "Write" >> WriteTable(self._url, DEAD_LETTER_SCHEMA, counter=metrics.DEAD_LETTERS_WRITTEN,
                                    bigquery=self._bigquery)
        )
        return refused | "CountFailedWrites" >> beam.ParDo(CountFailedDeadLettersFn())
