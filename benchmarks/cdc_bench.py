"""Benchmark: the CDC pipeline (batch, DirectRunner) against a plain-Python baseline, same data,
one run each, each in its own process so that peak RSS is its own.

    python benchmarks/cdc_bench.py [--changes 200000] [--workdir bench-out/cdc]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ROOT, beam_against_baseline, count_lines  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=200_000)
    parser.add_argument("--workdir", default="bench-out/cdc")
    args = parser.parse_args()
    work = os.path.abspath(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    inputs = f"{work}/in/*.jsonl"

    from kappaflow.samples.cdc import PRIMARY_KEYS

    print(f"generating {args.changes:,} changes ...", flush=True)
    subprocess.run([sys.executable, "-m", "kappaflow.samples.cdc", "--changes", str(args.changes),
                    "--out", f"{work}/in"], cwd=ROOT, check=True)
    beam_against_baseline(
        [sys.executable, "-m", "pipelines.cdc", f"--input={inputs}", f"--output=sqlite:///{work}/beam.db",
         f"--primary_keys={PRIMARY_KEYS}"],
        [sys.executable, "benchmarks/baseline_cdc.py", inputs, f"sqlite:///{work}/baseline.db", PRIMARY_KEYS],
        count_lines(inputs))

    from kappaflow.tables import read_change_tables

    same = read_change_tables(f"sqlite:///{work}/beam.db") == read_change_tables(f"sqlite:///{work}/baseline.db")
    print(f"same target tables (every column, tombstones included) from both: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
