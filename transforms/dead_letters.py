"""Gather the dead-letter outputs of every stage into one PCollection for one sink."""

from __future__ import annotations

from typing import Sequence

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows

__all__ = ["CollectDeadLetters"]


class CollectDeadLetters(beam.PTransform):
    """Stages emit dead letters under their own windowing; the sink wants one, the global one."""

    def expand(self, dead_letters: Sequence[beam.PCollection]) -> beam.PCollection:
        rewindowed = [
            pcoll | f"GlobalWindow{i}" >> beam.WindowInto(GlobalWindows())
            for i, pcoll in enumerate(dead_letters)
        ]
        return rewindowed | "Flatten" >> beam.Flatten()
