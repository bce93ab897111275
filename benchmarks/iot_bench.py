"""Benchmark: the IoT sensors pipeline (batch, DirectRunner) against a plain-Python baseline, same
data, one run each, each in its own process so that peak RSS is its own.

    python benchmarks/iot_bench.py [--readings 200000] [--workdir bench-out/iot]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ROOT, beam_against_baseline, count_lines  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--workdir", default="bench-out/iot")
    args = parser.parse_args()
    work = os.path.abspath(args.workdir)
    os.makedirs(work, exist_ok=True)
    readings, reference = f"{work}/readings.jsonl", f"sqlite:///{work}/reference.db"
    for name in ("beam.db", "baseline.db"):
        if os.path.exists(f"{work}/{name}"):
            os.remove(f"{work}/{name}")

    print(f"generating {args.readings:,} readings ...", flush=True)
    subprocess.run([sys.executable, "-m", "kappaflow.samples.iot", "--readings", str(args.readings),
                    "--out", readings, "--reference_db", reference], cwd=ROOT, check=True)
    beam_against_baseline(
        [sys.executable, "-m", "pipelines.iot_sensors", f"--input={readings}", f"--reference_db={reference}",
         "--ingest_time_field=ingest_time", f"--output=sqlite:///{work}/beam.db"],
        [sys.executable, "benchmarks/baseline_iot.py", readings, reference, f"sqlite:///{work}/baseline.db"],
        count_lines(readings))

    from kappaflow.core.schemas.iot import SENSOR_ALERTS, SENSOR_STATS
    from kappaflow.tables import diff_tables, read_rows

    def stats(url: str) -> dict:
        # The baseline averages with fsum; Beam sums exactly: compare avg to 1e-9.
        return {k: {**v, "avg": round(v["avg"], 9)} for k, v in read_rows(url, SENSOR_STATS).items()}

    def alerts(url: str) -> dict:
        rows = read_rows(url, SENSOR_ALERTS)
        return {k: {c: x for c, x in v.items() if c != "created_at"} for k, v in rows.items()}

    beam_db, base_db = f"sqlite:///{work}/beam.db", f"sqlite:///{work}/baseline.db"
    print(f"same sensor_stats from both: {diff_tables(stats(beam_db), stats(base_db)).summary()}; "
          f"same sensor_alerts: {diff_tables(alerts(beam_db), alerts(base_db)).summary()}")


if __name__ == "__main__":
    main()
