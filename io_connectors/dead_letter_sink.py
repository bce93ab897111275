"""The one dead-letter sink of every pipeline: all stages' dead letters, one table, keyed upserts."""

from __future__ import annotations

from typing import Sequence

import apache_beam as beam

from io_connectors.sinks import WriteTable
from transforms import metrics
from transforms.dead_letters import CollectDeadLetters
from transforms.records import DEAD_LETTER_SCHEMA

__all__ = ["WriteDeadLetters"]


class WriteDeadLetters(beam.PTransform):
    """(dead-letter PCollections of every stage) → the `dead_letters` table at `url`."""

    def __init__(self, url: str, pipeline: str) -> None:
        super().__init__()
        self._url = url
        self._pipeline = pipeline

    def expand(self, dead_letters: Sequence[beam.PCollection]) -> beam.PCollection:
        return (
            dead_letters
            | "Collect" >> CollectDeadLetters()
            | "Write" >> WriteTable(self._url, DEAD_LETTER_SCHEMA, self._pipeline,
                                    counter=metrics.DEAD_LETTERS_WRITTEN)
        )
