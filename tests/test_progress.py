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
