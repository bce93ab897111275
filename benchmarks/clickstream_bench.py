"""Benchmark: the clickstream pipeline (batch, DirectRunner) against a plain-Python baseline,
same data, one run each, each in its own process so that peak RSS is its own.

    python benchmarks/clickstream_bench.py [--events 1000000] [--workdir bench-out]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(argv: list[str]) -> tuple[float, float, str]:
    """Run a command; return wall seconds, peak RSS in MiB, and its last output line."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv} failed")
    return seconds, usage.ru_maxrss / 1024, out.strip().splitlines()[-1] if out.strip() else ""


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
    with open(events, "rb") as handle:
        lines = sum(1 for _ in handle)

    print("running the Beam pipeline (batch, DirectRunner) ...", flush=True)
    beam_s, beam_mb, beam_line = measure([
        sys.executable, "-m", "pipelines.clickstream", f"--input={events}", f"--reference_db={reference}",
        f"--output=sqlite:///{work}/beam.db"])
    print(f"  {beam_line}")
    print("running the plain-Python baseline ...", flush=True)
    base_s, base_mb, _ = measure([
        sys.executable, "benchmarks/baseline_clickstream.py", events, reference, f"sqlite:///{work}/baseline.db"])

    from kappaflow.schemas.clickstream import CLICKSTREAM_METRICS
    from kappaflow.tables import diff_tables, read_rows

    def rounded(url: str) -> dict:
        # The baseline adds floats in file order; Beam sums exactly: compare revenue to the micro-unit.
        return {k: {**v, "revenue": round(v["revenue"], 6)} for k, v in read_rows(url, CLICKSTREAM_METRICS).items()}

    same = diff_tables(rounded(f"sqlite:///{work}/beam.db"), rounded(f"sqlite:///{work}/baseline.db"))
    beam_rate, base_rate = lines / beam_s, lines / base_s
    print(f"\n{'':28}{'events/s':>12}{'wall s':>10}{'peak RSS MiB':>15}")
    print(f"{'(a) Beam batch, DirectRunner':28}{beam_rate:>12,.0f}{beam_s:>10.1f}{beam_mb:>15,.0f}")
    print(f"{'(b) plain Python baseline':28}{base_rate:>12,.0f}{base_s:>10.1f}{base_mb:>15,.0f}")
    print(f"ratio (a)/(b): throughput {beam_rate / base_rate:.3f}x, peak RSS {beam_mb / base_mb:.2f}x "
          f"({lines:,} input lines; wall time includes interpreter start-up)")
    print(f"same clickstream_metrics table from both: {same.summary()}")


if __name__ == "__main__":
    main()
