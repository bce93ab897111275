"""Every consumer query of docs/bigquery.md, run on a pipeline's real output in bqemulator."""

from __future__ import annotations

import os
import re

import pytest

from fixtures_bigquery import PROJECT
from kappaflow.launcher import run
from kappaflow.samples.clickstream import SampleConfig, build_reference_db, write_sample
from pipelines import clickstream

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_QUERY = re.compile(r"```sql\n-- query: (\w+)\n(.*?)```", re.S)


def doc_queries() -> dict[str, str]:
    with open(os.path.join(ROOT, "docs", "bigquery.md"), encoding="utf-8") as handle:
        return dict(_QUERY.findall(handle.read()))


def run_doc_query(emulator, name: str, dataset: str) -> list[dict]:
    client = emulator.client()
    try:
        sql = doc_queries()[name].replace("PROJECT.DATASET", f"{PROJECT}.{dataset}")
        return [dict(row.items()) for row in client.query(sql).result()]
    finally:
        client.close()


def test_the_doc_has_the_consumer_queries():
    assert set(doc_queries()) == {"latest_metrics", "restated_windows", "dead_letters_by_reason", "cdc_as_of_now"}


@pytest.mark.slow
def test_consumer_queries_on_a_streaming_clickstream_run(bigquery_emulator, tmp_path):
    """A streaming replay whose disorder makes LATE panes restate windows."""
    url = bigquery_emulator.dataset("docs_clicks")
    events, reference = str(tmp_path / "events.jsonl"), f"sqlite:///{tmp_path}/reference.db"
    # One event a second, 10 s of network delay on average, 20 s windows, the watermark at the
    # newest event time after every 20 events: a few windows get LATE panes.
    config = SampleConfig(events=80, events_per_second=1.0, mean_delay_seconds=10, malformed_share=0.03,
                          too_late_share=0.0)
    write_sample(events, config)
    build_reference_db(reference, config)
    acc = run(clickstream.PIPELINE, clickstream.build, [
        f"--input={events}", f"--output={url}", f"--reference_db={reference}", "--streaming",
        "--replay_chunk_size=20", "--max_out_of_orderness_seconds=0", "--window_seconds=20",
        "--early_firing_seconds=0", f"--bigquery_endpoint={bigquery_emulator.host}"], clickstream.ClickstreamOptions)
    assert acc.balanced and acc.invalid > 0

    latest = run_doc_query(bigquery_emulator, "latest_metrics", "docs_clicks")
    assert sum(r["events"] for r in latest) == acc.aggregated
    assert len({(r["window_start"], r["event_type"], r["country"]) for r in latest}) == len(latest)

    restated = run_doc_query(bigquery_emulator, "restated_windows", "docs_clicks")
    assert restated, "late data restated no window"
    by_key = {(r["window_start"], r["event_type"], r["country"]): r for r in latest}
    for window in restated:
        assert window["panes"] > 1 and window["last_pane"] > window["first_pane"]
        current = by_key[(window["window_start"], window["event_type"], window["country"])]
        assert (window["latest_events"], window["latest_timing"]) == (current["events"], "LATE")

    letters = run_doc_query(bigquery_emulator, "dead_letters_by_reason", "docs_clicks")
    assert sum(r["records"] for r in letters) == acc.dead_letters_written == acc.invalid
    assert {r["stage"] for r in letters} == {"parse"} and all(r["reason"] for r in letters)
