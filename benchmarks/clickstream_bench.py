"""Benchmark: the clickstream pipeline (batch, DirectRunner) against a plain-Python baseline,
same data, one run each, each in its own process so that peak RSS is its own.

    python benchmarks/clickstream_bench.py [--events 1000000] [--workdir bench-out]
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
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--workdir", default="bench-out")
    args = parser.parse_args()
    work = os.path.abspath(args.workdir)
    os.makedirs(work, exist_ok=True)
    events, reference = f"{work}/events.jsonl", f"sqlite:///{work}/reference.db"
    for name in ("beam.db", "baseline.db"):
        if os.path.exists(f"{work}/{name}"):
            os.remove(f"{work}/{name}")

    print(f"generating {args.events:,} events ...", flush=True)
    subprocess.run([sys.executable, "-m", "kappaflow.samples.clickstream", "--events", str(args.events),
                    "--out", events, "--reference_db", reference], cwd=ROOT, check=True)
    beam_against_baseline(
        [sys.executable, "-m", "pipelines.clickstream", f"--input={events}", f"--reference_db={reference}",
         f"--output=sqlite:///{work}/beam.db"],
        [sys.executable, "benchmarks/baseline_clickstream.py", events, reference, f"sqlite:///{work}/baseline.db"],
        count_lines(events))

    from kappaflow.schemas.clickstream import CLICKSTREAM_METRICS
    from kappaflow.tables import diff_tables, read_rows

    def rounded(url: str) -> dict:
        # The baseline adds floats in file order; Beam sums exactly: compare revenue to the micro-unit.
        return {k: {**v, "revenue": round(v["revenue"], 6)} for k, v in read_rows(url, CLICKSTREAM_METRICS).items()}

    same = diff_tables(rounded(f"sqlite:///{work}/beam.db"), rounded(f"sqlite:///{work}/baseline.db"))
    print(f"same clickstream_metrics table from both: {same.summary()}")


if __name__ == "__main__":
    main()
