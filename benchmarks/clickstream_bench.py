"""Benchmark: the clickstream engine against a plain-Python baseline, every figure of issue 10 from
one run, each pipeline run in its own process so that its peak RSS is its own.

    python benchmarks/clickstream_bench.py [--events 1000000] [--scale 4] [--runners prism,flink]
        [--workdir bench-out]

Rows: the plain-Python baseline; batch on the local default runner (FnApiRunner); the streaming
replay on the local default (Prism) at N events and, with --scale K, at K x N events (linearity:
time and peak-RSS ratios); with --runners, Prism and embedded Flink in batch and replay. events/s
is input lines / wall time, interpreter and runner start-up included. Every Beam table is checked
against the baseline's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ROOT, count_lines, measure_tree  # noqa: E402

RUNNER_ROWS = {
    "prism": (("Prism batch", ("--runner=PrismRunner",)),
              ("Prism replay", ("--runner=PrismRunner", "--streaming"))),
    "flink": (("Flink embedded batch", ("--runner=FlinkRunner",)),
              ("Flink embedded replay", ("--runner=FlinkRunner", "--streaming"))),
}


def sample(work: str, events: int) -> tuple[str, str]:
    path, reference = f"{work}/events-{events}.jsonl", f"sqlite:///{work}/reference-{events}.db"
    if not os.path.exists(path):
        print(f"generating {events:,} events ...", flush=True)
        subprocess.run([sys.executable, "-m", "kappaflow.samples.clickstream", "--events", str(events),
                        "--out", path, "--reference_db", reference], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
    return path, reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--scale", type=int, default=4, help="also replay K x events (0: skip)")
    parser.add_argument("--runners", default="", help="comma-separated: prism, flink")
    parser.add_argument("--workdir", default="bench-out")
    args = parser.parse_args()
    work = os.path.abspath(args.workdir)
    os.makedirs(work, exist_ok=True)

    from kappaflow.core.schemas.clickstream import CLICKSTREAM_METRICS
    from kappaflow.tables import diff_tables, read_rows

    def table(url: str) -> dict:
        # The baseline adds floats in file order; Beam sums exactly: compare revenue to the micro-unit.
        return {k: {**v, "revenue": round(v["revenue"], 6)} for k, v in read_rows(url, CLICKSTREAM_METRICS).items()}

    results: dict[str, tuple[int, float, float]] = {}  # label → (lines, seconds, peak MiB)
    baseline_tables: dict[int, dict] = {}  # events → the baseline's table

    def run(label: str, events: int, argv_tail: tuple[str, ...], baseline: bool = False) -> None:
        path, reference = sample(work, events)
        db = f"{work}/{label.replace(' ', '_')}-{events}.db"
        if os.path.exists(db):
            os.remove(db)
        if baseline:
            argv = [sys.executable, "benchmarks/baseline_clickstream.py", path, reference, f"sqlite:///{db}"]
        else:
            argv = [sys.executable, "-m", "pipelines.clickstream", f"--input={path}", f"--reference_db={reference}",
                    f"--output=sqlite:///{db}", "--progress=off", *argv_tail]
        print(f"running {label} ({events:,} events) ...", flush=True)
        seconds, peaks, last = measure_tree(argv)
        mib = max(peaks.values()) if peaks else 0.0
        results[label] = (count_lines(path), seconds, peaks.get("python", mib))
        if last:
            print(f"  {last}")
        if baseline:
            baseline_tables[events] = table(f"sqlite:///{db}")
        else:
            same = diff_tables(table(f"sqlite:///{db}"), baseline_tables[events])
            print(f"  table = baseline table: {same.summary()}")

    n = args.events
    run("baseline", n, (), baseline=True)
    run("batch", n, ())
    run("replay", n, ("--streaming",))
    if args.scale > 1:
        run(f"baseline x{args.scale}", n * args.scale, (), baseline=True)
        run(f"replay x{args.scale}", n * args.scale, ("--streaming",))
    for name in filter(None, args.runners.split(",")):
        for label, tail in RUNNER_ROWS[name]:
            run(label, n, tail)

    print(f"\n{'':28}{'lines':>12}{'events/s':>12}{'wall s':>10}{'peak RSS MiB':>15}")
    for label, (lines, seconds, mib) in results.items():
        print(f"{label:28}{lines:>12,}{lines / seconds:>12,.0f}{seconds:>10.1f}{mib:>15,.0f}")

    def rate(label: str) -> float:
        lines, seconds, _ = results[label]
        return lines / seconds

    print("\nratios (issue 10's table):")
    print(f"  batch / plain-Python baseline (throughput)      {rate('batch') / rate('baseline'):.3f}x")
    print(f"  peak RSS, batch                                 {results['batch'][2]:,.0f} MiB")
    print(f"  replay / batch (throughput)                     {rate('replay') / rate('batch'):.3f}")
    if f"replay x{args.scale}" in results:
        big, small = results[f"replay x{args.scale}"], results["replay"]
        print(f"  replay time x{args.scale} / time x1                     {big[1] / small[1]:.2f}")
        print(f"  replay peak RSS x{args.scale} / x1                      {big[2] / small[2]:.2f}")
    for name in filter(None, args.runners.split(",")):
        for label, _ in RUNNER_ROWS[name]:
            print(f"  {label} / local batch{'':<{27 - len(label)}}{rate(label) / rate('batch'):.3f}")


if __name__ == "__main__":
    main()
