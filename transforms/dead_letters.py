"""The one dead-letter path of a pipeline, in the spirit of Beam's ErrorHandler
(apache_beam/transforms/error_handling.py):

    with DeadLetters(WriteDeadLetters(url, "clickstream", id_field="event_id")) as dead_letters:
        events = dead_letters.collect(records | "Parse" >> ParseEvents(SCHEMA))   # a stage
        ...
        dead_letters.collect(rows | "WriteMetrics" >> WriteTable(url, TABLE))     # a sink

A stage's dead-letter output (DEAD_LETTER_TAG) holds Rejections: stage, reason, the element. The
pipeline hands each stage's outputs to `collect`, which keeps the rejections and gives back what
the stage passed on; a sink's only output is its rejections. Leaving the block hands them all to
one step (`write`), which makes the dead-letter rows. A stage whose rejections do not reach that
step stops the run before it starts (kappaflow/checks.check_dead_letters_reach_a_sink).
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows

from kappaflow.core.records import DEAD_LETTER_TAG, dead_letter_row

__all__ = ["DeadLetters", "CollectDeadLetters", "ToDeadLetterRows"]


class DeadLetters:
    """Collects the stages' rejections while the pipeline is built; `write` takes them all at the end."""

    def __init__(self, write: beam.PTransform, label: str = "WriteDeadLetters") -> None:
        self._write = write
        self._label = label
        self._rejections: list[beam.PCollection] = []
        self._closed = False

    def __enter__(self) -> "DeadLetters":
        return self

    def __exit__(self, error_type, *_) -> None:
        if error_type is None:
            self.close()

    def collect(
        self, outputs: Union[beam.pvalue.DoOutputsTuple, Mapping[str, beam.PCollection], beam.PCollection]
    ) -> Optional[beam.PCollection]:
        """A stage's outputs (a ParDo's, or a {tag: PCollection} of a composite) → its main output,
        its rejections kept; a sink's rejections (a PCollection) → None."""
        if self._closed:
            raise RuntimeError("dead letters collected after they were written")
        if isinstance(outputs, beam.PCollection):
            self._rejections.append(outputs)
            return None
        self._rejections.append(outputs[DEAD_LETTER_TAG])
        if isinstance(outputs, Mapping):
            (main,) = (pcoll for tag, pcoll in outputs.items() if tag != DEAD_LETTER_TAG)
            return main
        return next(iter(outputs))  # a ParDo's main output comes first

    def close(self) -> None:
        self._closed = True
        tuple(self._rejections) | self._label >> self._write


class CollectDeadLetters(beam.PTransform):
    """Stages emit rejections under their own windowing; the sink wants one, the global one."""

    def expand(self, rejections: Sequence[beam.PCollection]) -> beam.PCollection:
        rewindowed = [
            pcoll | f"GlobalWindow{i}" >> beam.WindowInto(GlobalWindows())
            for i, pcoll in enumerate(rejections)
        ]
        return rewindowed | "Flatten" >> beam.Flatten()


class ToDeadLetterRows(beam.PTransform):
    """Rejections → `dead_letters` rows of `pipeline`; the record id is read from `id_field`."""

    def __init__(self, pipeline: str, id_field: Optional[str] = None) -> None:
        super().__init__()
        self._pipeline = pipeline
        self._id_field = id_field

    def expand(self, rejections: beam.PCollection) -> beam.PCollection:
        return rejections | "ToRow" >> beam.Map(dead_letter_row, self._pipeline, self._id_field)
