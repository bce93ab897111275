"""Benchmark: the clickstream replay on a fresh local standalone Flink cluster at each parallelism.

    python benchmarks/flink_cluster_bench.py [--events 1000000] [--files 32] [--parallelism 1,2]
        [--workdir bench-out]

The sample (the one clickstream_bench.py makes) is cut into --files files of consecutive lines, as
a day of hourly files would be, and replayed with `--streaming --runner=FlinkRunner` at each
parallelism on a cluster this script starts (scripts/flink-cluster.sh, on free ports) and stops.
Each file is one element of the replay's splittable DoFn, and Flink spreads those elements over
its subtasks by a hash of the file's name: with few files one subtask can get most of them, so
the figure depends on the number of files (8 files gave 2 and 6 at p=2 in one run).

Prints per parallelism: wall time (launcher start to exit: the job server's start and the upload
of its jars to the cluster included), the Flink job's own time (submission to finish, from the
cluster's REST API), events/s, and both times' ratio to the first parallelism; and checks that
every run wrote the first run's table and balanced its accounting.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clickstream_bench import sample  # noqa: E402
from harness import ROOT, count_lines, measure_tree  # noqa: E402
from runners_bench import _free_port  # noqa: E402


def split_into_files(path: str, files: int, directory: str) -> str:
    """`path`'s lines cut into `files` files of consecutive lines; returns their glob."""
    os.makedirs(directory, exist_ok=True)
    for old in os.listdir(directory):
        os.remove(os.path.join(directory, old))
    lines = count_lines(path)
    per_file = -(-lines // files)
    with open(path, "rb") as source:
        for index in range(files):
            with open(os.path.join(directory, f"part-{index:03d}.jsonl"), "wb") as part:
                for _ in range(per_file):
                    line = source.readline()
                    if not line:
                        break
                    part.write(line)
    return os.path.join(directory, "*.jsonl")


def newest_job_seconds(rest: str) -> float:
    """The run time of the job the cluster started last, from its REST API."""
    with urllib.request.urlopen(f"http://{rest}/jobs/overview", timeout=10) as response:
        jobs = json.load(response)["jobs"]
    newest = max(jobs, key=lambda job: job["start-time"])
    if newest["state"] != "FINISHED":
        raise SystemExit(f"the cluster's last job ended {newest['state']}")
    return newest["duration"] / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=32, help="files to cut the sample into")
    parser.add_argument("--parallelism", default="1,2", help="comma-separated, the first is the reference")
    parser.add_argument("--workdir", default="bench-out")
    args = parser.parse_args()
    if args.files < 1:
        parser.error("--files must be >= 1")
    levels = [int(p) for p in args.parallelism.split(",")]
    work = os.path.abspath(args.workdir)
    os.makedirs(work, exist_ok=True)

    from kappaflow.core.schemas.clickstream import CLICKSTREAM_METRICS
    from kappaflow.tables import diff_tables, read_rows

    path, reference = sample(work, args.events)
    pattern = split_into_files(path, args.files, f"{work}/files-{args.events}-{args.files}")
    lines = count_lines(path)
    env = {**os.environ, "FLINK_REST_PORT": str(_free_port()), "FLINK_RPC_PORT": str(_free_port())}
    rest = f"127.0.0.1:{env['FLINK_REST_PORT']}"
    subprocess.run(["bash", "scripts/flink-cluster.sh", "start"], cwd=ROOT, env=env, check=True)
    rows, first_table = [], None
    try:
        for parallelism in levels:
            db = f"{work}/flink-cluster-p{parallelism}-{args.events}.db"
            if os.path.exists(db):
                os.remove(db)
            print(f"replaying {lines:,} events from {args.files} files at parallelism {parallelism} ...", flush=True)
            seconds, _, last = measure_tree([
                sys.executable, "-m", "pipelines.clickstream", f"--input={pattern}", f"--reference_db={reference}",
                f"--output=sqlite:///{db}", "--progress=off", "--streaming", "--runner=FlinkRunner",
                f"--flink_master={rest}", f"--parallelism={parallelism}"])
            print(f"  {last}")
            if "accounting balanced" not in last:
                raise SystemExit(f"parallelism {parallelism}: the run's accounting did not balance")
            table = read_rows(f"sqlite:///{db}", CLICKSTREAM_METRICS)
            first_table = table if first_table is None else first_table
            same = diff_tables(first_table, table).summary()
            rows.append((parallelism, seconds, newest_job_seconds(rest), same))
    finally:
        subprocess.run(["bash", "scripts/flink-cluster.sh", "stop"], cwd=ROOT, env=env, check=False)

    print(f"\n{lines:,} events in {args.files} files, Flink standalone cluster, one run each")
    print(f"{'parallelism':>11}{'wall s':>9}{'job s':>8}{'events/s':>10}{'wall ratio':>12}{'job ratio':>11}"
          f"  table vs p={rows[0][0]}")
    _, first_wall, first_job, _ = rows[0]
    for parallelism, wall, job, same in rows:
        print(f"{parallelism:>11}{wall:>9.1f}{job:>8.1f}{lines / wall:>10,.0f}{first_wall / wall:>12.2f}"
              f"{first_job / job:>11.2f}  {same}")


if __name__ == "__main__":
    main()
