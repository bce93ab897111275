"""Benchmark: each pipeline on each runner, same data, one run each, each in its own process.

    python benchmarks/runners_bench.py [--events 20000] [--workdir bench-runners-out] [--cluster]
        [--only TEXT] [--pipelines clickstream,iot_sensors,cdc]

Prints events/s (input lines / wall time, start-up included: a JVM or Prism start is part of
what a user waits for), the peak RSS of the Python process (the launcher and, with LOOPBACK, the
SDK harness) and of the Flink JVM (the job server, with embedded Flink in it), and checks that every
run wrote the batch DirectRunner's table. `--cluster` adds a run on a fresh local standalone cluster
and reports the peak RSS of its JobManager and TaskManager.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import os
import socket
import subprocess
import sys
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ROOT, count_lines, measure_tree, peak_rss_mib  # noqa: E402

# (label, runner arguments); the first is the reference table.
RUNS = (
    ("DirectRunner batch", ()),
    ("DirectRunner streaming replay", ("--streaming",)),
    ("Prism batch", ("--runner=PrismRunner",)),
    ("Prism streaming", ("--runner=PrismRunner", "--streaming")),
    ("Flink embedded batch", ("--runner=FlinkRunner",)),
    ("Flink embedded streaming", ("--runner=FlinkRunner", "--streaming")),
)


@dataclasses.dataclass(frozen=True)
class PipelineBench:
    """How to make a pipeline's sample and read its output, for the same run on every runner."""

    # (sample path stem, events) → sample generator command, --input value, extra pipeline arguments
    sample: Callable[[str, int], tuple[list[str], str, tuple[str, ...]]]
    read_output: Callable[[str], dict]  # output URL → every output row, keyed by (table, *key)


def _clickstream_sample(stem: str, events: int) -> tuple[list[str], str, tuple[str, ...]]:
    reference = f"sqlite:///{stem}-reference.db"
    return (["kappaflow.samples.clickstream", "--events", str(events), "--out", f"{stem}.jsonl",
             "--reference_db", reference], f"{stem}.jsonl", (f"--reference_db={reference}",))


def _iot_sample(stem: str, events: int) -> tuple[list[str], str, tuple[str, ...]]:
    reference = f"sqlite:///{stem}-reference.db"
    return (["kappaflow.samples.iot", "--readings", str(events), "--out", f"{stem}.jsonl",
             "--reference_db", reference], f"{stem}.jsonl",
            (f"--reference_db={reference}", "--ingest_time_field=ingest_time"))


def _cdc_sample(stem: str, events: int) -> tuple[list[str], str, tuple[str, ...]]:
    from kappaflow.samples.cdc import PRIMARY_KEYS

    return (["kappaflow.samples.cdc", "--changes", str(events), "--out", stem], f"{stem}/*.jsonl",
            (f"--primary_keys={PRIMARY_KEYS}",))


def _iot_output(url: str) -> dict:
    from kappaflow.core.schemas.iot import SENSOR_ALERTS, SENSOR_STATS
    from kappaflow.tables import read_rows

    alerts = {k: {c: v for c, v in row.items() if c != "created_at"}  # when the run raised it
              for k, row in read_rows(url, SENSOR_ALERTS).items()}
    return {**{("stats", *k): v for k, v in read_rows(url, SENSOR_STATS).items()},
            **{("alert", *k): v for k, v in alerts.items()}}


def _cdc_output(url: str) -> dict:
    from kappaflow.tables import read_change_tables

    return {(table, *key): row for table, rows in read_change_tables(url).items() for key, row in rows.items()}


def _clickstream_output(url: str) -> dict:
    from kappaflow.core.schemas.clickstream import CLICKSTREAM_METRICS
    from kappaflow.tables import read_rows

    return {("metrics", *k): v for k, v in read_rows(url, CLICKSTREAM_METRICS).items()}


PIPELINES = {
    "clickstream": PipelineBench(_clickstream_sample, _clickstream_output),
    "iot_sensors": PipelineBench(_iot_sample, _iot_output),
    "cdc": PipelineBench(_cdc_sample, _cdc_output),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--workdir", default="bench-runners-out")
    parser.add_argument("--cluster", action="store_true", help="also run on a local standalone Flink cluster")
    parser.add_argument("--only", default="", help="run only the runners whose label contains this text "
                        "(e.g. 'cluster'), besides the DirectRunner batch reference")
    parser.add_argument("--pipelines", default=",".join(PIPELINES), help="comma-separated pipelines to run")
    args = parser.parse_args()
    work = os.path.abspath(args.workdir)
    os.makedirs(work, exist_ok=True)

    from kappaflow.tables import diff_tables

    cluster_env = None
    runs = list(RUNS)
    if args.cluster:
        cluster_env = {**os.environ, "FLINK_REST_PORT": str(_free_port()), "FLINK_RPC_PORT": str(_free_port())}
        subprocess.run(["bash", "scripts/flink-cluster.sh", "start"], cwd=ROOT, env=cluster_env, check=True)
        runs.append(("Flink cluster streaming",
                     ("--runner=FlinkRunner", "--streaming", f"--flink_master=127.0.0.1:{cluster_env['FLINK_REST_PORT']}")))
    try:
        runs = [runs[0], *(run for run in runs[1:] if args.only.lower() in run[0].lower())]
        for pipeline in args.pipelines.split(","):
            bench = PIPELINES[pipeline]
            command, sample_input, pipeline_args = bench.sample(f"{work}/{pipeline}-sample", args.events)
            print(f"[{pipeline}] generating {args.events:,} events ...", flush=True)
            subprocess.run([sys.executable, "-m", *command], cwd=ROOT, check=True)
            lines = count_lines(sample_input)
            rows, reference_rows = [], None
            for index, (label, runner_args) in enumerate(runs):
                db = f"{work}/{pipeline}-{index}.db"
                if os.path.exists(db):
                    os.remove(db)
                seconds, peaks, line = measure_tree([
                    sys.executable, "-m", f"pipelines.{pipeline}", f"--input={sample_input}",
                    f"--output=sqlite:///{db}", *pipeline_args, *runner_args])
                print(f"  {line}", flush=True)
                table_rows = bench.read_output(f"sqlite:///{db}")
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
