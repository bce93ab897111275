"""`--report=PATH`: the run's accounting as JSON (.json), or a page to look at (.html)."""

from __future__ import annotations

from typing import Any, Sequence

from apache_beam.options.pipeline_options import PipelineOptions

from kappaflow.progress import Snapshot

__all__ = ["write_report"]


def write_report(path: str, accounting: Any, options: PipelineOptions, samples: Sequence[Snapshot] = ()) -> None:
    if path.lower().endswith((".html", ".htm")):
        from kappaflow.report_html import render_report

        text = render_report(accounting, options, samples)
    else:
        text = accounting.to_json() + "\n"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
