"""Progress while a pipeline runs: one live line on a terminal (tqdm), a plain line every N seconds
in logs, from the running job's own counters; for live jobs also the whole accounting every
`report_every` seconds (kappaflow/launcher.py says how it reads).

The counters come from `PipelineResult.metrics().query()`, polled in a thread while the launcher
waits. That works wherever `pipeline.run()` returns while the job runs: Prism, Flink, Dataflow and
the streaming DirectRunner (BundleBasedDirectRunner). The batch FnApiRunner runs the whole job
inside `pipeline.run()` and has no result before the end, so there the line shows the time spent
(and, when the input size is known, what is to come) until the counters arrive.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import sys
import threading
import time
from typing import Any, Callable, Optional, TextIO

from apache_beam.metrics.metric import MetricsFilter

from kappaflow.core import metrics

__all__ = ["Snapshot", "ProgressMonitor", "counter_totals", "estimate_records", "fresh_metrics", "read_snapshot"]

# The accounting categories a record leaves through into the dead letters.
DEAD_LETTER_COUNTERS = (metrics.INVALID, metrics.TOO_LATE, metrics.ENRICH_FAILED, metrics.REJECTED)
# How often the live line refreshes (a plain line comes every `interval` seconds instead).
_LIVE_REFRESH_SECONDS = 1.0


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """The job's counters at one moment (seconds since the run started)."""

    elapsed: float
    read: int
    dead_letters: int
    event_time: Optional[float] = None  # the newest event time stamped so far (replays), epoch seconds
    # The replay source's watermark: the minimum over the files it has checkpointed (inf: all read).
    watermark: Optional[float] = None


def counter_totals(found: dict) -> dict[str, int]:
    """A metrics query's counters, summed by name over steps (committed where the runner has it)."""
    totals: dict[str, int] = {}
    for counter in found["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + (value or 0)
    return totals


def read_snapshot(result: Any, elapsed: float) -> Snapshot:
    """Snapshot of a (running or finished) PipelineResult; raises what the runner raises."""
    found = fresh_metrics(result).query(MetricsFilter().with_namespace(metrics.NAMESPACE))
    totals = counter_totals(found)
    event_time = None
    files: dict[str, int] = {}  # replayed file → its watermark
    for gauge in found.get("gauges", []):
        value = gauge.committed if gauge.committed is not None else gauge.attempted
        if value is None or value.value is None:
            continue
        name = gauge.key.metric.name
        if name == metrics.EVENT_TIME_POSITION:
            event_time = max(event_time or 0, value.value)
        elif name.startswith(metrics.SOURCE_WATERMARK_PREFIX):
            files[name] = max(files.get(name, value.value), value.value)  # a file's watermark only rises
    watermark = None
    if files:
        reading = [v for v in files.values() if v < metrics.FILE_DONE]
        watermark = float(min(reading)) if reading else float("inf")
    return Snapshot(elapsed, totals.get(metrics.READ, 0),
                    sum(totals.get(name, 0) for name in DEAD_LETTER_COUNTERS), event_time, watermark)


def fresh_metrics(result: Any) -> Any:
    """`result.metrics()` as the job stands now. Beam's portable PipelineResult (Prism, Flink) keeps
    its first answer for good (portable_runner.PipelineResult.metrics): one poll while the job runs
    would freeze the launcher's final accounting at that moment. So the cache is dropped around it."""
    if hasattr(result, "_metrics") and hasattr(result, "_job_service"):
        result._metrics = None
        try:
            return result.metrics()
        finally:
            result._metrics = None
    return result.metrics()


def estimate_records(pattern: Optional[str]) -> Optional[int]:
    """About how many records local input files hold, cheaply (a Parquet footer, or the size of a
    text file over the mean line length of its first 256 KiB); None when it cannot tell."""
    if not pattern or "://" in pattern or pattern.startswith("bigquery:"):
        return None
    import glob

    total = 0
    for part in filter(None, (p.strip() for p in pattern.split(","))):
        for path in glob.glob(part):
            name = path.lower()
            if name.endswith((".jsonl", ".json", ".ndjson", ".csv")):
                with open(path, "rb") as handle:
                    head = handle.read(256 * 1024)
                lines = head.count(b"\n") or 1
                size = os.path.getsize(path)
                total += size if not head else round(size * lines / len(head))
                if name.endswith(".csv"):
                    total -= 1  # the header
            elif name.endswith((".parquet", ".pq")):
                import pyarrow.parquet as pq

                total += pq.ParquetFile(path).metadata.num_rows
            else:
                return None  # compressed or Avro: no cheap count
    return total or None


class ProgressMonitor:
    """`with ProgressMonitor(...) as monitor: result = p.run(); monitor.follow(result); result.wait_until_finish()`.

    mode: "bar" (a live tqdm line), "plain" (a line every `interval` seconds), "off", or "auto"
    (bar on a terminal, else plain). `samples` keeps what was seen, for the run report.
    `report(result, elapsed)` → a line printed to stdout every `report_every` seconds, whatever the
    mode (a live job's accounting); a report that raises is skipped until the next one.
    """

    def __init__(self, label: str, mode: str = "auto", interval: float = 10.0,
                 total: Optional[int] = None, stream: Optional[TextIO] = None, replay: bool = False,
                 report: Optional[Callable[[Any, float], str]] = None, report_every: Optional[float] = None) -> None:
        if mode not in ("auto", "bar", "plain", "off"):
            raise ValueError(f"progress mode must be auto, bar, plain or off, not {mode!r}")
        if interval <= 0:
            raise ValueError("progress interval must be > 0 seconds")
        if report is not None and (report_every is None or report_every <= 0):
            raise ValueError("report_every must be > 0 seconds with a report")
        self._report = report
        self._report_every = report_every
        self._stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if getattr(self._stream, "isatty", lambda: False)() else "plain"
        self.mode = mode
        self._label = label
        self._interval = interval
        self._total = total
        self._replay = replay  # event time advances with the run (a streaming replay): show where it is
        self._position: Optional[float] = None
        self._result: Any = None
        self._started = time.monotonic()
        self._done = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._bar: Any = None
        self.samples: list[Snapshot] = []
        self.unavailable: Optional[str] = None  # why the runner gave no live counters, if it did not

    def __enter__(self) -> "ProgressMonitor":
        self._started = time.monotonic()
        if self.mode == "off" and self._report is None:
            return self
        if self.mode == "bar":
            from tqdm import tqdm

            known = self._total is not None
            self._bar = tqdm(total=self._total, desc=self._label, unit=" records",
                             file=self._stream, dynamic_ncols=True, leave=True,
                             bar_format="{desc}: {n_fmt}" + ("/{total_fmt}" if known else "")
                                        + " read | {rate_fmt}{postfix} | {elapsed}"
                                        + (" | ETA {remaining}" if known else ""))
        self._thread = threading.Thread(target=self._loop, name="kappaflow-progress", daemon=True)
        self._thread.start()
        return self

    def follow(self, result: Any) -> None:
        """The job's result, once `pipeline.run()` returned it (running or already done)."""
        self._result = result

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        if self._result is not None and exc[0] is None:
            self._poll(final=True)  # the final counters
        if self._bar is not None:
            self._bar.close()

    def _loop(self) -> None:
        never = float("inf")
        period = _LIVE_REFRESH_SECONDS if self.mode == "bar" else self._interval
        next_poll = never if self.mode == "off" else period
        next_report = self._report_every if self._report is not None else never
        while not self._done.wait(max(0.0, min(next_poll, next_report) - (time.monotonic() - self._started))):
            elapsed = time.monotonic() - self._started
            if elapsed >= next_poll:
                self._poll()
                next_poll = elapsed + period
            if elapsed >= next_report:
                self._print_report(elapsed)
                next_report = elapsed + self._report_every

    def _print_report(self, elapsed: float) -> None:
        if self._result is None:
            return
        try:
            line = self._report(self._result, elapsed)
        except Exception as err:  # the runner has no counters now: the next report tries again
            self.unavailable = self.unavailable or f"{type(err).__name__}: {err}"
            return
        if self._bar is not None:
            self._bar.write(line, file=sys.stdout)  # above the live line, which stays
        else:
            print(line, file=sys.stdout, flush=True)

    def _poll(self, final: bool = False) -> None:
        elapsed = time.monotonic() - self._started
        snapshot = None
        if self._result is not None:
            try:
                snapshot = read_snapshot(self._result, elapsed)
            except Exception as err:  # a runner without live metrics: say so once, keep the clock
                self.unavailable = self.unavailable or f"{type(err).__name__}: {err}"
        if snapshot is not None:
            self.samples.append(snapshot)
        self._show(snapshot, elapsed, final)

    def _show(self, snapshot: Optional[Snapshot], elapsed: float, final: bool = False) -> None:
        if self.mode == "off":
            return  # the final snapshot is still kept for the report
        position = ""
        if self._replay and snapshot is not None and snapshot.event_time:
            # Bundles finish out of order: the newest event time seen so far is the position.
            self._position = max(self._position or 0.0, snapshot.event_time)
            stamp = dt.datetime.fromtimestamp(self._position, dt.timezone.utc)
            position = f" | event time {stamp:%Y-%m-%d %H:%M:%S}Z"
        if self._replay and snapshot is not None and snapshot.watermark is not None:
            # The source's (files still being read), not a downstream stage's: runners do not report those.
            position += " | watermark " + ("end of input" if snapshot.watermark == float("inf") else
                                           f"{dt.datetime.fromtimestamp(snapshot.watermark, dt.timezone.utc):%Y-%m-%d %H:%M:%S}Z")
        if self._bar is not None:
            if snapshot is None:
                self._bar.set_postfix_str(self._waiting(), refresh=False)
                self._bar.refresh()
                return
            self._bar.n = snapshot.read
            self._bar.set_postfix_str(f"dead letters {snapshot.dead_letters:,}{position}", refresh=False)
            self._bar.refresh()
            return
        if snapshot is None:
            line = f"{self._label}: running {elapsed:.0f}s ({self._waiting()})"
        else:
            rate = snapshot.read / elapsed if elapsed else 0.0
            line = (f"{self._label}: read {snapshot.read:,} ({rate:,.0f} records/s) | dead letters "
                    f"{snapshot.dead_letters:,}{position} | {elapsed:.0f}s")
            if self._total and rate and not final and snapshot.read < self._total:
                line += f" | ~{(self._total - snapshot.read) / rate:.0f}s to go"
        print(line, file=self._stream, flush=True)

    def _waiting(self) -> str:
        if self._result is None:
            return "no counters yet: the runner has not handed over the running job"
        return "this runner gives no counters while it runs"
