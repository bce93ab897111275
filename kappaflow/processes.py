"""The helper processes kappaflow starts: stopping them, and keeping a shared job server alive."""

from __future__ import annotations

import logging
import subprocess
import threading
from typing import Callable, Optional

import grpc
from apache_beam.portability.api import beam_job_api_pb2
from apache_beam.runners.portability import job_server

__all__ = ["RestartIfGone", "stop_process"]

_LOG = logging.getLogger(__name__)


def stop_process(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds; returns once it is gone."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _gone(stub) -> bool:
    """Whether the job service behind `stub` no longer answers (its process has exited)."""
    try:
        stub.DescribePipelineOptions(beam_job_api_pb2.DescribePipelineOptionsRequest(), timeout=30)
    except grpc.RpcError as e:
        return e.code() == grpc.StatusCode.UNAVAILABLE
    return False


class RestartIfGone(job_server.JobServer):
    """One job server for all the runs of a process, started again if its process has died.

    Beam starts a local job server (Prism, our Flink job server) once per process and, should that
    process die, hands its dead endpoint to every later run, each failing with UNAVAILABLE: a test
    session or a notebook would lose the runner for good. Before each run this checks that the
    server still answers and otherwise starts a new one (on a new port), with a warning.
    """

    def __init__(self, name: str, make: Callable[[], job_server.JobServer]) -> None:
        self._name = name
        self._make = make
        self._server: Optional[job_server.JobServer] = None
        self._lock = threading.Lock()

    def start(self):
        with self._lock:
            if self._server is not None:
                stub = self._server.start()
                if not _gone(stub):
                    return stub
                _LOG.warning("%s, shared by this process's runs, has exited; starting a new one", self._name)
                self._server.stop()
            self._server = self._make()
            return self._server.start()

    def stop(self) -> None:
        with self._lock:
            if self._server is not None:
                self._server.stop()
