"""A local job server that died is started again at the next run (kappaflow/processes.py).

Beam keeps one Prism per process; in a CI run one died between two tests and every later Prism
test failed with UNAVAILABLE on its dead port."""

from __future__ import annotations

import logging
import os
import signal
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from kappaflow import prism


def _run_on_prism() -> None:
    options = PipelineOptions()
    runner, _ = prism.resolve(options)
    with beam.Pipeline(runner, options=options) as p:
        assert_that(p | beam.Create([1, 2, 3]) | beam.Map(lambda n: n * 2), equal_to([2, 4, 6]))


def _prism_children() -> set[int]:
    """This process's Prism job servers."""
    pids = set()
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rpartition(")")[2].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                command = f.read().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if parent == os.getpid() and command[0] == prism.binary().encode() and b"--job_port" in command:
            pids.add(int(entry))
    return pids


def test_a_killed_prism_is_started_again_for_the_next_run(monkeypatch, caplog):
    monkeypatch.setattr(prism, "_SHARED", None)  # a Prism of this test's own; the session's stays
    before = _prism_children()
    _run_on_prism()
    started = _prism_children() - before
    assert len(started) == 1, started
    pid = started.pop()
    os.kill(pid, signal.SIGKILL)
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        time.sleep(0.1)

    with caplog.at_level(logging.WARNING, logger="kappaflow.processes"):
        _run_on_prism()
    assert "Prism, shared by this process's runs, has exited; starting a new one" in caplog.text
    assert len(_prism_children() - before) == 1
    prism._SHARED.stop()
