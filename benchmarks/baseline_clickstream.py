"""Plain-Python, single-process baseline computing the clickstream_metrics table of a batch run:
json + dict dedup + dict aggregation + SQLite upsert. The yardstick for the Beam pipeline.

    python benchmarks/baseline_clickstream.py EVENTS.jsonl REFERENCE_URL OUTPUT_URL
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

import sqlalchemy as sa

from io_connectors.sql_sink import ensure_table, upsert_rows
from kappaflow.core.schema import parse_timestamp
from kappaflow.core.schemas.clickstream import CLICKSTREAM_METRICS
from kappaflow.core.sql import create_engine

WINDOW = 60.0


def main(path: str, reference_url: str, output_url: str) -> int:
    ref = sa.create_engine(reference_url)
    with ref.connect() as conn:
        countries = dict(conn.execute(sa.text("SELECT user_id, country FROM users")).all())
    seen: set[str] = set()
    groups: dict[tuple, list] = defaultdict(lambda: [0, set(), 0.0])
    read = 0
    with open(path, "rb") as handle:
        for line in handle:
            read += 1
            try:
                event = json.loads(line)
                event_id, user_id, event_type = event["event_id"], event["user_id"], event["event_type"]
                if not all(isinstance(v, str) for v in (event_id, user_id, event_type)):
                    continue
                ts = parse_timestamp(event["timestamp"])
                price = (event.get("properties") or {}).get("price")
                price = None if price is None else float(price)  # validated on every event type
                revenue = price if event_type == "purchase" and price is not None else 0.0
            except (ValueError, KeyError, TypeError):
                continue
            if event_id in seen:
                continue
            seen.add(event_id)
            start = ts - ts % WINDOW
            group = groups[(start, event_type, countries.get(user_id, "unknown"))]
            group[0] += 1
            group[1].add(user_id)
            group[2] += revenue
    rows = [
        {"window_start": start, "window_end": start + WINDOW, "event_type": et, "country": c,
         "events": g[0], "unique_users": len(g[1]), "revenue": g[2], "pane_timing": "ON_TIME",
         "pane_index": 0, "updated_at": 0.0}
        for (start, et, c), g in groups.items()
    ]
    engine = create_engine(output_url)
    table = ensure_table(engine, CLICKSTREAM_METRICS)
    for i in range(0, len(rows), 500):
        upsert_rows(engine, table, CLICKSTREAM_METRICS.key, rows[i:i + 500])
    return read


if __name__ == "__main__":
    print(main(*sys.argv[1:4]))
