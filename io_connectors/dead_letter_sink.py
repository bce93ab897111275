"""The one dead-letter sink of every pipeline: all stages' dead letters, one table, keyed upserts."""

from __future__ import annotations

from typing import Optional, Sequence

import apache_beam as beam

from io_connectors.bigquery import BigQueryWriteConfig
from io_connectors.sinks import WriteTable
from kappaflow.core import metrics
from kappaflow.core.records import DEAD_LETTER_SCHEMA
from transforms.dead_letters import CollectDeadLetters

__all__ = ["WriteDeadLetters"]


class WriteDeadLetters(beam.PTransform):
    """(dead-letter PCollections of every stage) → the `dead_letters` table at `url`."""

    def __init__(self, url: str, pipeline: str, bigquery: Optional[BigQueryWriteConfig] = None) -> None:
        super().__init__()
        self._url = url
        self._pipeline = pipeline
        self._bigquery = bigquery

    def expand(self, dead_letters: Sequence[beam.PCollection]) -> beam.PCollection:
        return (
            dead_letters
            | "Collect" >> CollectDeadLetters()
            | "Write" >> WriteTable(self._url, DEAD_LETTER_SCHEMA, self._pipeline,
                                    counter=metrics.DEAD_LETTERS_WRITTEN, bigquery=self._bigquery)
        )
