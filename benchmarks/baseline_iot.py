"""Plain-Python, single-process baseline computing the sensor_stats and sensor_alerts tables of a
batch run of the IoT pipeline: json + ingest-time lifting + clock skew + units + dict dedup +
registry dict + dict aggregation per 10 s window + SQLite upsert. The yardstick for the Beam run.

    python benchmarks/baseline_iot.py READINGS.jsonl REFERENCE_URL OUTPUT_URL
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections import defaultdict

import sqlalchemy as sa

from io_connectors.sql_sink import ensure_table, upsert_rows
from kappaflow.core.schema import format_timestamp, parse_timestamp
from kappaflow.core.schemas.iot import SENSOR_ALERTS, SENSOR_STATS
from kappaflow.core.sql import create_engine
from transforms.units import STANDARD_UNITS

WINDOW, MAX_SKEW, DEFAULT_MAX_TEMP_C = 10.0, 300.0, 90.0


def _time(value):
    return None if value in (None, "") else parse_timestamp(value)


def main(path: str, reference_url: str, output_url: str) -> int:
    ref = sa.create_engine(reference_url)
    with ref.connect() as conn:
        registry = {r[0]: r[1:] for r in conn.execute(sa.text(
            "SELECT device_id, facility, line, max_temp_c FROM devices")).all()}
    seen: set = set()
    groups: dict = defaultdict(list)  # (window start, device) → [values, types, facilities, lines, thresholds]
    read = 0
    with open(path, "rb") as handle:
        for line in handle:
            read += 1
            try:
                record = json.loads(line)
                ingest = record.pop("ingest_time", None)
                try:
                    ingest = _time(ingest)
                except ValueError:
                    ingest = None
                device, kind, unit = record["device_id"], record["device_type"], record["unit"]
                if not all(isinstance(v, str) and v for v in (device, kind, unit)):
                    continue
                value = record["value"]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    continue
                device_time = _time(record.get("timestamp"))
                location = record.get("location") or {}
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            if ingest is not None and (device_time is None or abs(device_time - ingest) > MAX_SKEW):
                ts = ingest
            elif device_time is not None:
                ts = device_time
            else:
                continue
            rule = STANDARD_UNITS.get(unit.strip().lower())
            if rule is None or (kind in ("temperature", "pressure", "humidity") and kind != rule.quantity):
                continue
            key = (device, ts if device_time is None else device_time)
            if key in seen:
                continue
            seen.add(key)
            if record.get("quality") != "good":
                continue
            facility, line_, threshold = registry.get(device, (None, None, None))
            groups[(ts - ts % WINDOW, device)].append((
                rule.convert(float(value)), kind, facility or location.get("facility"),
                line_ or location.get("line"), DEFAULT_MAX_TEMP_C if threshold is None else threshold))
    now = time.time()
    stats, alerts = [], []
    for (start, device), items in groups.items():
        values = sorted(i[0] for i in items)
        mx = values[-1]
        facilities = [i[2] for i in items if i[2] is not None]
        lines = [i[3] for i in items if i[3] is not None]
        stats.append({"window_start": start, "window_end": start + WINDOW, "device_id": device,
                      "facility": max(facilities) if facilities else None, "line": max(lines) if lines else None,
                      "count": len(values), "min": values[0], "max": mx, "avg": math.fsum(values) / len(values),
                      "p95": values[max(1, math.ceil(0.95 * len(values))) - 1], "pane_timing": "ON_TIME",
                      "pane_index": 0, "updated_at": now})
        threshold = min(i[4] for i in items)
        if max(i[1] for i in items) == "temperature" and mx > threshold:
            alerts.append({"alert_id": f"{device}/{format_timestamp(start)}", "device_id": device,
                           "window_start": start, "window_end": start + WINDOW, "max": mx, "threshold": threshold,
                           "severity": "critical" if mx - threshold >= 10 else "warning", "created_at": now})
    engine = create_engine(output_url)
    for schema, rows in ((SENSOR_STATS, stats), (SENSOR_ALERTS, alerts)):
        table = ensure_table(engine, schema)
        for i in range(0, len(rows), 500):
            upsert_rows(engine, table, schema.key, rows[i:i + 500])
    return read


if __name__ == "__main__":
    print(main(*sys.argv[1:4]))
