"""Benchmark: each pipeline on each runner, same data, one run each, each in its own process.

    python benchmarks/runners_bench.py [--events 20000] [--workdir bench-runners-out] [--cluster]

Prints events/s (input lines / wall time, start-up included: a JVM or Prism start is part of
what a user waits for), the peak RSS of the Python process (the launcher and, with LOOPBACK, the
SDK harness) and of the Flink JVM (the job server, with embedded Flink in it), and checks that every
run wrote the batch DirectRunner's table. `--cluster` adds a run on a fresh local standalone cluster
and reports the peak RSS of its JobManager and TaskManager.
"""

from __future__ import annotations

import argparse
import glob
import os
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ROOT, measure_tree, peak_rss_mib  # noqa: E402

# (label, runner arguments); the first is the reference table.
RUNS = (
    ("DirectRunner batch", ()),
    ("DirectRunner streaming replay", ("--streaming",)),
    ("Prism batch", ("--runner=PrismRunner",)),
    ("Prism streaming", ("--runner=PrismRunner", "--streaming")),
    ("Flink embedded batch", ("--runner=FlinkRunner",)),
    ("Flink embedded streaming", ("--runner=FlinkRunner", "--streaming")),
)
# pipeline module → (sample generator module, output table schema); one line per pipeline.
PIPELINES = {"clickstream": ("kappaflow.samples.clickstream", "kappaflow.schemas.clickstream:CLICKSTREAM_METRICS")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--workdir", default="bench-runners-out")
    parser.add_argument("--cluster", action="store_true", help="also run on a local standalone Flink cluster")
    args = parser.parse_args()
    work = os.path.abspath(args.workdir)
    os.makedirs(work, exist_ok=True)

    from kappaflow.tables import diff_tables, read_rows

    cluster_env = None
    runs = list(RUNS)
    if args.cluster:
        cluster_env = {**os.environ, "FLINK_REST_PORT": str(_free_port()), "FLINK_RPC_PORT": str(_free_port())}
        subprocess.run(["bash", "scripts/flink-cluster.sh", "start"], cwd=ROOT, env=cluster_env, check=True)
        runs.append(("Flink cluster streaming",
                     ("--runner=FlinkRunner", "--streaming", f"--flink_master=127.0.0.1:{cluster_env['FLINK_REST_PORT']}")))
    try:
        for pipeline, (sample_module, table_ref) in PIPELINES.items():
            module_name, table_name = table_ref.split(":")
            table = getattr(__import__(module_name, fromlist=[table_name]), table_name)
            events, reference = f"{work}/{pipeline}-events.jsonl", f"sqlite:///{work}/{pipeline}-reference.db"
            print(f"[{pipeline}] generating {args.events:,} events ...", flush=True)
            subprocess.run([sys.executable, "-m", sample_module, "--events", str(args.events), "--out", events,
                            "--reference_db", reference], cwd=ROOT, check=True)
            with open(events, "rb") as handle:
                lines = sum(1 for _ in handle)
            rows, reference_rows = [], None
            for index, (label, runner_args) in enumerate(runs):
                db = f"{work}/{pipeline}-{index}.db"
                if os.path.exists(db):
                    os.remove(db)
                seconds, peaks, line = measure_tree([
                    sys.executable, "-m", f"pipelines.{pipeline}", f"--input={events}",
                    f"--reference_db={reference}", f"--output=sqlite:///{db}", *runner_args])
                print(f"  {line}", flush=True)
                table_rows = read_rows(f"sqlite:///{db}", table)
                if reference_rows is None:
                    reference_rows = table_rows
                same = diff_tables(reference_rows, table_rows).summary()
                rows.append((label, seconds, peaks.get("python", 0.0), peaks.get("java", 0.0), same))
            print(f"\n[{pipeline}] {lines:,} input lines, one run each (wall time includes start-up)")
            print(f"{'':32}{'events/s':>10}{'wall s':>9}{'Python MiB':>12}{'Flink JVM MiB':>15}  table vs DirectRunner batch")
            for label, seconds, py_mb, java_mb, same in rows:
                java = f"{java_mb:,.0f}" if java_mb else "-"
                print(f"{label:32}{lines / seconds:>10,.0f}{seconds:>9.1f}{py_mb:>12,.0f}{java:>15}  {same}")
        if cluster_env:
            run_dir = os.path.join(os.environ.get("KAPPAFLOW_CACHE", os.path.join(ROOT, ".cache")), "flink",
                                   f"cluster-{cluster_env['FLINK_REST_PORT']}")
            for pid_file in sorted(glob.glob(f"{run_dir}/*.pid")):
                with open(pid_file, encoding="ascii") as handle:
                    for pid in handle.read().split():
                        kind = "TaskManager" if "taskexecutor" in pid_file else "JobManager"
                        print(f"standalone cluster {kind} peak RSS: {peak_rss_mib(int(pid)):,.0f} MiB")
    finally:
        if cluster_env:
            subprocess.run(["bash", "scripts/flink-cluster.sh", "stop"], cwd=ROOT, env=cluster_env, check=False)


if __name__ == "__main__":
    main()
