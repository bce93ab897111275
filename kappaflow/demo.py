"""The demo behind `make demo`: sample data → batch run and streaming replay → comparison.

    python -m kappaflow.demo [--events 100000] [--workdir demo-out]
"""

from __future__ import annotations

import argparse
import contextlib
import os

from kappaflow.core.schemas.clickstream import CLICKSTREAM_METRICS
from kappaflow.launcher import Accounting
from kappaflow.samples.clickstream import SampleConfig, build_reference_db, write_sample
from kappaflow.tables import diff_tables, explain_difference, read_rows, too_late_records
from pipelines import clickstream


def run_pipeline(label: str, argv: list[str]) -> Accounting:
    print(f"\n== {label}", flush=True)  # the launcher shows the progress (kappaflow/progress.py)
    return clickstream_run(argv)


def clickstream_run(argv: list[str]) -> Accounting:
    from kappaflow.launcher import run

    return run(clickstream.PIPELINE, clickstream.build, argv, clickstream.ClickstreamOptions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workdir", default="demo-out")
    args = parser.parse_args()

    os.makedirs(args.workdir, exist_ok=True)
    work = os.path.abspath(args.workdir)
    events, reference = f"{work}/events.jsonl", f"sqlite:///{work}/reference.db"
    batch_db, streaming_db = f"sqlite:///{work}/batch.db", f"sqlite:///{work}/streaming.db"
    for name in ("batch.db", "streaming.db"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(f"{work}/{name}")

    config = SampleConfig(events=args.events, seed=args.seed)
    print(f"== generating {config.events:,} events (seed {config.seed}) into {events}", flush=True)
    lines = write_sample(events, config)
    build_reference_db(reference, config)
    print(f"   {lines:,} lines: ~{config.duplicate_share:.0%} duplicates, ~{config.malformed_share:.1%} "
          f"malformed, ~{config.too_late_share:.1%} beyond the allowed lateness; reference db {reference}")

    common = [f"--input={events}", f"--reference_db={reference}"]
    batch = run_pipeline("batch", [*common, f"--output={batch_db}", f"--report={work}/batch.html"])
    streaming = run_pipeline(
        "streaming replay",
        [*common, f"--output={streaming_db}", "--streaming", f"--report={work}/streaming.html"],
    )

    batch_rows = read_rows(batch_db, CLICKSTREAM_METRICS)
    streaming_rows = read_rows(streaming_db, CLICKSTREAM_METRICS)
    diff = diff_tables(batch_rows, streaming_rows)
    print("\n== result")
    print(f"{'':14}{'read':>10}{'invalid':>10}{'duplicates':>12}{'too late':>10}{'rows written':>14}")
    for label, acc in (("batch", batch), ("streaming", streaming)):
        print(f"{label:14}{acc.read:>10,}{acc.invalid:>10,}{acc.duplicates:>12,}{acc.too_late:>10,}"
              f"{acc.rows_written:>14,}   accounting {'balanced' if acc.balanced else 'UNBALANCED'}")
    print(f"final clickstream_metrics tables ({len(batch_rows):,} vs {len(streaming_rows):,} rows): "
          f"{diff.summary()}")
    if not diff.identical:
        late = too_late_records(streaming_db, clickstream.PIPELINE)
        explained = explain_difference(batch_rows, streaming_rows, late)
        print(f"the difference is exactly the {len(late):,} records the replay dead-lettered as too late: "
              f"{'yes' if explained else 'NO'}")
    print(f"\nrun reports (open in a browser): {work}/batch.html, {work}/streaming.html")


if __name__ == "__main__":
    main()
