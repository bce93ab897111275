"""Beam's Java expansion service and Java SDK workers, for cross-language transforms (Kafka, GCP IO).

Beam's Python wrappers (`apache_beam.io.kafka.ReadFromKafka`, ...) would download a shaded
`beam-sdks-java-io-expansion-service` jar, which is not published for 2.70.0, and run the expanded
Java transforms in Docker containers. Neither is available on many Flink clusters (nor here). So:

- the expansion service is `org.apache.beam.sdk.expansion.service.ExpansionService` on the classpath
  that scripts/setup-expansion-service.sh assembles, on a free loopback port;
- the Java transforms it expands run in the EXTERNAL environment: the runner asks a worker pool
  (`org.apache.beam.fn.harness.ExternalWorkerService`, same classpath) to start a Java SDK harness.
  Prism and Flink (embedded, or a cluster on this machine) both accept EXTERNAL; Prism 2.70 refuses
  EMBEDDED and the DOCKER/PROCESS environments need Beam's container image or boot binary.
  A Flink cluster elsewhere runs its own worker pool next to each TaskManager (Beam's usual
  sidecar, `ExternalWorkerService` on the same classpath): `--java_worker_pool=HOST:PORT` names it
  and no local pool is started.

Both JVMs start on first use, when a pipeline applies a Java transform (`expansion_service()`), and
`stop()` ends them when the run ends (kappaflow/launcher.py), or when a `kept()` block that
shares them between runs ends; an exit of the process ends them too.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from typing import Iterator, Mapping, Optional

import grpc

from kappaflow.processes import stop_process
from kappaflow.runner_cache import BEAM_VERSION, cache_dir, require

__all__ = ["JavaServices", "classpath", "expansion_service", "kept", "running", "stop"]

_LOG = logging.getLogger(__name__)
_EXPANSION_MAIN = "org.apache.beam.sdk.expansion.service.ExpansionService"
_WORKER_MAIN = "org.apache.beam.fn.harness.ExternalWorkerService"
_START_TIMEOUT_SECONDS = 120.0  # two JVMs on a busy 2-core machine: ~5-20 s each


def classpath() -> str:
    lib = os.path.join(cache_dir(), "expansion-service", BEAM_VERSION, "lib")
    require(os.path.join(lib, f"beam-sdks-java-expansion-service-{BEAM_VERSION}.jar"),
            f"Beam's Java expansion service (Beam {BEAM_VERSION})", "setup-expansion-service")
    return os.path.join(lib, "*")


def _staged_jar(cp: str) -> str:
    # The expanded transforms' environment lists its files to stage, by default the whole classpath
    # (~240 jars, ~175 MB) that every job would copy to the runner. The EXTERNAL workers run on
    # that classpath already and fetch no artifacts, so one jar (the Kafka IO's) stands for it.
    return os.path.join(os.path.dirname(cp), f"beam-sdks-java-io-kafka-{BEAM_VERSION}.jar")


def _die_with_parent() -> None:
    """In the child before exec: a launcher killed by a signal (no atexit) takes its JVMs along (Linux)."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    from apache_beam.utils.subprocess_server import pick_port

    return pick_port(None)[0]


class _JavaProcess:
    """One JVM serving gRPC on `port`; its output goes to a log file, named when it fails to start."""

    def __init__(self, what: str, argv: list[str], port: int, env: Optional[dict[str, str]] = None) -> None:
        self.what = what
        self.address = f"localhost:{port}"
        self._log = tempfile.NamedTemporaryFile(prefix=f"kappaflow-{what.replace(' ', '-')}-", suffix=".log",
                                                delete=False)
        self._proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      env={**os.environ, **(env or {})}, preexec_fn=_die_with_parent)

    def wait_ready(self, timeout: float) -> None:
        with grpc.insecure_channel(self.address) as channel:
            ready = grpc.channel_ready_future(channel)
            waited = 0.0
            while True:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"{self.what} exited with status {self._proc.returncode} "
                                       f"before listening on {self.address}; see {self._log.name}")
                try:
                    ready.result(timeout=1.0)
                    return
                except grpc.FutureTimeoutError:
                    waited += 1.0
                    if waited >= timeout:
                        self.stop()
                        raise RuntimeError(f"{self.what} did not listen on {self.address} within {timeout:.0f}s")

    def stop(self) -> None:
        stop_process(self._proc, timeout=15)
        self._log.close()
        if self._proc.returncode in (0, -15, 143):  # a clean stop: the log is of no further use
            os.unlink(self._log.name)


class JavaServices:
    """The expansion service and (unless `worker_pool` names an existing one) a Java worker pool.

    `java_options` (Java pipeline option name → value) go to the worker pool: its Java SDK workers
    run with the pool's own pipeline options, not the job's (ExternalWorkerService), so options the
    Java transforms read at run time (e.g. `bigQueryEndpoint`) must be given when it starts."""

    def __init__(self, worker_pool: Optional[str] = None, java: Optional[str] = None,
                 java_options: Optional[Mapping[str, str]] = None) -> None:
        self._java = java or shutil.which("java") or "java"
        self._worker_pool = worker_pool
        self._java_options = dict(java_options or {})
        self._processes: list[_JavaProcess] = []
        self.expansion_address: Optional[str] = None

    def start(self) -> "JavaServices":
        cp = classpath()
        try:
            pool = self._worker_pool
            if pool is None:
                port = _free_port()
                pool = f"localhost:{port}"
                # The pool reads its address from the pipeline options in PIPELINE_OPTIONS (the
                # environment config is not looked at); each harness it starts connects to the runner.
                options = {"options": {"environmentType": "EXTERNAL",
                                       "environmentOptions": [f"external_service_address={pool}"],
                                       **self._java_options}}
                worker = _JavaProcess("Java worker pool", [self._java, "-Xmx768m", "-cp", cp, _WORKER_MAIN],
                                      port, {"PIPELINE_OPTIONS": json.dumps(options)})
                self._processes.append(worker)
            port = _free_port()
            expansion = _JavaProcess(
                "Java expansion service",
                [self._java, "-Xmx512m", "-cp", cp, _EXPANSION_MAIN, str(port),
                 "--javaClassLookupAllowlistFile=*", "--defaultEnvironmentType=EXTERNAL",
                 f"--defaultEnvironmentConfig={pool}", f"--filesToStage={_staged_jar(cp)}"],
                port)
            self._processes.append(expansion)
            for process in self._processes:  # both JVMs boot at once, then we wait for each
                process.wait_ready(_START_TIMEOUT_SECONDS)
        except BaseException:
            self.stop()
            raise
        self.expansion_address = expansion.address
        _LOG.info("Java expansion service at %s, Java workers from %s", self.expansion_address, pool)
        return self

    def stop(self) -> None:
        while self._processes:
            self._processes.pop().stop()
        self.expansion_address = None

    def __enter__(self) -> "JavaServices":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


_LOCK = threading.Lock()
_RUNNING: Optional[JavaServices] = None
_RUNNING_POOL: Optional[str] = None
_RUNNING_OPTIONS: dict[str, str] = {}
# Services replaced by a restart. The Java transforms they expanded name their worker pool in their
# environment, so they run until the run ends: a live Kafka read expanded before a Storage Write sink
# that needs `bigQueryEndpoint` otherwise failed with "Connection refused" to the stopped pool.
_REPLACED: list[JavaServices] = []


def expansion_service(worker_pool: Optional[str] = None, java_options: Optional[Mapping[str, str]] = None) -> str:
    """The address of a running expansion service, started now if none runs (one per process).
    Services started for another worker pool, or without some of `java_options`, are replaced by
    new ones (with the options of both: one pipeline may apply several Java transforms); the old
    ones keep serving what they expanded until the run ends."""
    global _RUNNING, _RUNNING_POOL, _RUNNING_OPTIONS
    with _LOCK:
        wanted = {**_RUNNING_OPTIONS, **(java_options or {})} if _RUNNING_POOL == worker_pool else dict(
            java_options or {})
        if _RUNNING is not None and (_RUNNING_POOL != worker_pool or wanted != _RUNNING_OPTIONS):
            _REPLACED.append(_RUNNING)
            _RUNNING = None
        if _RUNNING is None:
            _RUNNING = JavaServices(worker_pool, java_options=wanted).start()
            _RUNNING_POOL, _RUNNING_OPTIONS = worker_pool, wanted
        assert _RUNNING.expansion_address is not None
        return _RUNNING.expansion_address


_KEPT = 0


def running() -> bool:
    return _RUNNING is not None or bool(_REPLACED)


def stop() -> None:
    """Stop the expansion service and worker pool, if they were started (the end of a run), unless
    a `kept()` block is open; replaced ones stop in any case (the run that used them has ended)."""
    global _RUNNING
    with _LOCK:
        while _REPLACED:
            _REPLACED.pop().stop()
        if _RUNNING is not None and not _KEPT:
            _RUNNING.stop()
            _RUNNING = None


@contextlib.contextmanager
def kept() -> Iterator[None]:
    """Runs inside share one expansion service and worker pool (a test session, a demo running
    several jobs: ~5-30 s of JVM start-up each); they stop when the block ends."""
    global _KEPT
    with _LOCK:
        _KEPT += 1
    try:
        yield
    finally:
        with _LOCK:
            _KEPT -= 1
        stop()


atexit.register(stop)
