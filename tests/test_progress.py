"""Progress from a running job's counters: the live line on a terminal, the input size estimate,
and polling a running Prism job without freezing its final accounting."""

from __future__ import annotations

import fcntl
import io
import os
import select
import struct
import termios
import time

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from conftest import counter
from kappaflow.core import metrics
from kappaflow.progress import ProgressMonitor, estimate_records
from kappaflow.samples.clickstream import SampleConfig, write_sample


def test_live_bar_on_a_terminal(tmp_path):
    """On a terminal the monitor draws one tqdm line from the job's counters."""
    import pty

    from apache_beam.runners.portability.fn_api_runner import fn_runner

    read = Metrics.counter(metrics.NAMESPACE, metrics.READ)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a 120-column terminal
    with open(slave, "w", encoding="utf-8", closefd=True) as terminal:
        with ProgressMonitor("demo", total=50, stream=terminal) as monitor:
            assert monitor.mode == "bar"
            p = beam.Pipeline(runner=fn_runner.FnApiRunner())
            _ = p | beam.Create(range(42)) | beam.Map(lambda x: read.inc())
            result = p.run()
            monitor.follow(result)
            result.wait_until_finish()
        chunks = []
        while select.select([master], [], [], 0.5)[0]:  # what the terminal received (before it closes)
            chunks.append(os.read(master, 65536))
    os.close(master)
    shown = b"".join(chunks).decode("utf-8", errors="replace")
    assert "demo: 42/50 read" in shown and "dead letters 0" in shown, shown
    assert monitor.samples[-1].read == 42


def test_estimate_records_of_local_files(tmp_path):
    path = tmp_path / "events.jsonl"
    lines = write_sample(str(path), SampleConfig(events=2000, seed=3))
    estimate = estimate_records(str(path))
    assert abs(estimate - lines) <= lines * 0.05
    assert estimate_records("gs://bucket/*.jsonl") is None and estimate_records(None) is None


def test_polling_a_running_prism_job_keeps_its_final_counters_whole():
    """Beam's portable result caches its first metrics() answer; a poll mid-run must not freeze it."""
    from kappaflow import prism

    options = PipelineOptions([])
    runner, _ = prism.resolve(options)
    read = Metrics.counter(metrics.NAMESPACE, metrics.READ)

    def count_slowly(x):
        time.sleep(0.01)
        read.inc()

    p = beam.Pipeline(runner=runner, options=options)
    _ = p | beam.Create(range(300)) | beam.Reshuffle() | beam.Map(count_slowly)
    with ProgressMonitor("prism", mode="plain", interval=0.2, stream=io.StringIO()) as monitor:
        result = p.run()
        monitor.follow(result)
        result.wait_until_finish()
    assert monitor.unavailable is None
    assert len(monitor.samples) >= 2 and monitor.samples[0].read < 300  # polled while it ran
    assert counter(result, metrics.READ) == 300


def test_accounting_reported_every_n_seconds_while_a_prism_job_runs(capsys):
    """A live job's accounting every `report_every` seconds, from the counters as they stand, even
    with the progress line off; records not yet in an outcome are shown in flight."""
    from kappaflow import prism
    from kappaflow.launcher import read_accounting

    options = PipelineOptions([])
    runner, _ = prism.resolve(options)
    read = Metrics.counter(metrics.NAMESPACE, metrics.READ)
    aggregated = Metrics.counter(metrics.NAMESPACE, metrics.AGGREGATED)

    def read_slowly(x):
        time.sleep(0.01)
        read.inc()
        return x

    p = beam.Pipeline(runner=runner, options=options)
    _ = (p | beam.Create(range(300)) | "Spread" >> beam.Reshuffle() | "Read" >> beam.Map(read_slowly)
         | "Shuffle" >> beam.Reshuffle() | "Aggregate" >> beam.Map(lambda x: aggregated.inc()))

    def report(result, elapsed):
        return read_accounting(result, "demo", "prism", "streaming", elapsed).summary("running")

    with ProgressMonitor("demo", mode="off", report=report, report_every=0.3) as monitor:
        result = p.run()
        monitor.follow(result)
        result.wait_until_finish()
    lines = [line for line in capsys.readouterr().out.splitlines()
             if line.startswith("[demo] streaming on prism, running: ")]
    assert len(lines) >= 2, lines
    assert "read 300 " not in lines[0] and "| in flight " in lines[0], lines  # reported while it ran
    assert read_accounting(result, "demo", "prism", "streaming", 1.0).in_flight == 0


def test_a_replay_shows_its_source_watermark(tmp_path):
    """The replay source publishes each file's watermark (newest event time minus the bound) at
    its checkpoints; the line shows their minimum, and the end of input once every file is read."""
    import json

    from io_connectors.replay import ReplayConfig, ReplayFiles
    from kappaflow import prism
    from kappaflow.progress import read_snapshot
    from transforms.event_time import EventTimeOf

    t0 = 1_704_067_200
    for name, last in (("a", 600), ("b", 300)):
        (tmp_path / f"{name}.jsonl").write_text(
            "".join(json.dumps({"timestamp": t0 + t}) + "\n" for t in range(0, last, 3)), encoding="utf-8")
    options = PipelineOptions(["--streaming"])
    runner, _ = prism.resolve(options)
    p = beam.Pipeline(runner=runner, options=options)  # not a TestPipeline: its run() waits for the end
    _ = (p | ReplayFiles(str(tmp_path / "*.jsonl"), EventTimeOf("timestamp"), ReplayConfig(30, 20))
         | beam.Map(lambda record: time.sleep(0.01)))
    shown = io.StringIO()
    with ProgressMonitor("replay", mode="plain", interval=0.3, stream=shown, replay=True) as monitor:
        result = p.run()
        monitor.follow(result)
        result.wait_until_finish()
    marks = [s.watermark for s in monitor.samples if s.watermark is not None]
    assert marks and marks[-1] == float("inf")  # every file read
    running = [w for w in marks if w != float("inf")]
    assert running and all(t0 <= w <= t0 + 600 - 3 - 30 for w in running)  # polled mid-run, never ahead
    assert running == sorted(running)
    assert "| watermark end of input" in shown.getvalue() and "| watermark 2024-01-01 00:" in shown.getvalue()
    assert read_snapshot(result, 0).watermark == float("inf")
