"""Flink through Beam's Flink job server, started here from the classpath scripts/setup-flink.sh assembles.

No `beam-runners-flink-*-job-server` jar can be fetched, so Beam's FlinkRunner cannot start its own
job server. We start FlinkJobServerDriver (from `beam-runners-flink-<minor>:<sdk version>`) as a
subprocess on free loopback ports, once per process, and submit through it. The Flink master is a
pipeline option, so one job server serves embedded Flink (`[local]`, the default) and a cluster
(`--flink_master=127.0.0.1:PORT`) alike.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
import uuid
from typing import Iterator, Optional

from apache_beam.options.pipeline_options import (
    FlinkRunnerOptions, GoogleCloudOptions, PipelineOptions, PortableOptions, StandardOptions)
from apache_beam.runners.portability import job_server
from apache_beam.runners.portability.flink_runner import FlinkRunner
from apache_beam.utils import subprocess_server

from kappaflow.processes import RestartIfGone
from kappaflow.runner_cache import BEAM_VERSION, cache_dir, require

__all__ = ["FLINK_MINOR", "CheckpointOptions", "ClasspathJobServer", "DrainAtEndOfReplay", "KappaflowFlinkRunner",
           "classpath", "resolve"]

# Beam builds its Flink runner per Flink minor version; a cluster must run the same one.
FLINK_MINOR = "1.19"
DEFAULT_CHECKPOINT_MS = 5000
# Streaming on Beam 2.70's Flink runner, measured on the TaskManager-kill tests:
# - The replay's Impulse source emits its one element and then waits shutdown_sources_after_idle_ms
#   (Beam's default with checkpoints: forever). Once it finishes, the downstream stage drains all
#   remaining splittable-DoFn work inside its finish() (ExecutableStageDoFnOperator.flushData), and
#   Flink takes no checkpoint meanwhile ("Checkpoint triggering task [8]{ReadInput, ...} is not being
#   executed at the moment"); checkpoints-after-tasks-finished (Flink >= 1.15) does not help, as the
#   drain runs inside the task's finish() and holds its mailbox.
# - So on a cluster a file replay keeps the source up for good, and DrainAtEndOfReplay (below) ends the
#   job once every file has been read: Flink's stop-with-savepoint --drain, which finishes what is in
#   flight and fires every window, as the end of a finite input would. Checkpoints are taken for the
#   whole replay, and a replay restored from one goes on from its files' positions.
#   Not usable as the end signal: the operators' watermarks. The splittable DoFn's output watermark
#   reached +inf after half of a 5k replay (its residuals are processing-time timers, whose holds
#   Beam's operator loses between bundles).
# - Embedded Flink has no REST endpoint to stop a job through: there the source still stops after
#   DEFAULT_IDLE_SHUTDOWN_MS, and what is left of the replay is drained without checkpoints.
# - With finish_bundle_before_checkpointing=false (Beam's default) the SDF stalled after its first
#   deferred chunk (read 20 of 1,532, no rows written); finishing the bundle at each checkpoint
#   reads the whole replay and survives a killed TaskManager with the identical table.
DEFAULT_IDLE_SHUTDOWN_MS = 10_000
# A replayed file's next chunk starts only once the bundle that deferred it has finished, which Beam
# does after max_bundle_time_mills (1000 by default) or at a checkpoint. Measured on the standalone
# cluster, 30,585-line replay, one file: Flink job 59.3 s at 1000 ms, 31.8 s at 100 ms (p=1).
DEFAULT_BUNDLE_TIME_MS = 100
_DRIVER = "org.apache.beam.runners.flink.FlinkJobServerDriver"
# Flink and Beam reflect into JDK internals; Java 17 forbids it unless these packages are opened.
_OPENS = ("java.util", "java.lang", "java.lang.reflect", "java.io", "java.net", "java.nio",
          "sun.nio.ch", "java.util.concurrent", "java.time")


class CheckpointOptions(PipelineOptions):
    """Flink's checkpointing, passed to the job server as pipeline options (FlinkPipelineOptions)."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument("--checkpointing_interval", type=int, default=None,
                            help="Flink: ms between checkpoints; streaming runs default to "
                                 f"{DEFAULT_CHECKPOINT_MS}, -1 turns checkpointing off.")
        parser.add_argument("--finish_bundle_before_checkpointing", nargs="?", const=True, default=None,
                            type=lambda v: v.lower() in ("1", "true", "yes"),
                            help="Flink: finish the open bundle before each checkpoint; streaming runs "
                                 "default to true (Beam's default, false, stalls the replay's splittable DoFn).")
        parser.add_argument("--max_bundle_time_mills", type=int, default=None,
                            help="Flink: ms before an open bundle is finished; streaming runs default to "
                                 f"{DEFAULT_BUNDLE_TIME_MS} (Beam's default, 1000, holds a replay's next "
                                 "chunk up to a second).")
        parser.add_argument("--shutdown_sources_after_idle_ms", type=int, default=None,
                            help="Flink: stop sources idle this long, so a finite stream ends the job; "
                                 "checkpoints are only taken before the source stops. A file replay on a "
                                 "cluster keeps Beam's default (never, with checkpoints) and is drained once "
                                 "every file is read; other streaming runs default to "
                                 f"{DEFAULT_IDLE_SHUTDOWN_MS}. A Kafka read without a bound keeps Beam's default.")
        parser.add_argument("--state_backend", default=None, choices=("filesystem", "rocksdb"),
                            help="Flink: where checkpoints keep state; streaming runs on embedded Flink default "
                                 "to filesystem (Flink's default keeps them in the JobManager's memory, at most "
                                 "5 MiB per task, which a replay of 1M events outgrew).")
        parser.add_argument("--state_backend_storage_path", default=None,
                            help="Flink: the checkpoints' directory (a file:// URL) for --state_backend; on "
                                 "embedded Flink a temporary directory by default.")
        parser.add_argument("--savepoint_path", default=None,
                            help="Flink: start the job from this savepoint (its state and Kafka offsets), e.g. "
                                 "one `flink stop --savepointPath` wrote.")


def classpath() -> str:
    lib = os.path.join(cache_dir(), "flink", f"job-server-{BEAM_VERSION}", "lib")
    require(os.path.join(lib, f"beam-runners-flink-{FLINK_MINOR}-{BEAM_VERSION}.jar"),
            f"Beam's Flink {FLINK_MINOR} job server (Beam {BEAM_VERSION})", "setup-flink")
    return os.path.join(lib, "*")


class ClasspathJobServer(job_server.SubprocessJobServer):
    """FlinkJobServerDriver on free loopback ports; its default master is embedded Flink."""

    def __init__(self, java: Optional[str] = None) -> None:
        super().__init__()
        self._java = java or shutil.which("java") or "java"

    def subprocess_cmd_and_endpoint(self) -> tuple[list[str], str]:
        job_port, artifact_port, expansion_port = subprocess_server.pick_port(None, None, None)
        cmd = [self._java, *(f"--add-opens=java.base/{p}=ALL-UNNAMED" for p in _OPENS),
               "-cp", classpath(), _DRIVER,
               "--job-host", "localhost", "--job-port", str(job_port),
               "--artifact-port", str(artifact_port), "--expansion-port", str(expansion_port),
               "--artifacts-dir", self.local_temp_dir(prefix="artifacts"),
               "--flink-master", "[local]"]
        return cmd, f"localhost:{job_port}"


@functools.cache
def _shared_job_server() -> job_server.JobServer:
    # One JVM per process (a test session reuses it); stopped when the process exits.
    return RestartIfGone("the Flink job server", lambda: job_server.StopOnExitJobServer(ClasspathJobServer()))


# Flink's REST server answers 404 to a request line over 4 KiB (Netty's limit): the gauges of a
# replay of 33 files (~130 characters each, quoted) in one query stalled the end-of-replay watch.
MAX_GAUGE_QUERY_CHARS = 2000


def gauge_queries(quoted_names: list[str], limit: int = MAX_GAUGE_QUERY_CHARS) -> Iterator[str]:
    """URL-quoted metric names → `get=` values of at most `limit` characters (a longer name alone)."""
    batch: list[str] = []
    length = 0
    for name in quoted_names:
        if batch and length + 1 + len(name) > limit:
            yield ",".join(batch)
            batch, length = [], 0
        length += len(name) + (1 if batch else 0)
        batch.append(name)
    if batch:
        yield ",".join(batch)


def _rest(master: str, path: str, body: Optional[dict] = None, timeout: float = 10.0):
    """Flink's REST API on `master` (host:port): GET, or POST `body` as JSON."""
    import json
    import urllib.request

    request = urllib.request.Request(
        f"http://{master}{path}", method="POST" if body is not None else "GET",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"} if body is not None else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


class DrainAtEndOfReplay:
    """Ends a streaming file replay on a Flink cluster once every file has been read.

    The replay's source is kept up for good, so Flink checkpoints the whole replay; this watcher, a
    thread beside the launcher, polls the job's metrics through Flink's REST API. ReplayFileFn sets a
    gauge per file (`metrics.SOURCE_WATERMARK_PREFIX` + path) to `metrics.FILE_DONE` when the file is
    read to its end. Once `files` distinct files have shown it (remembered across a restore, whose
    new task attempts start their metrics afresh), it asks Flink to stop the job with drain: the
    source ends, whatever is in flight is processed, the end of event time fires every window, a
    final savepoint is written (and removed, when it went to a directory of ours) and the job is
    FINISHED, so the launcher's wait returns as for any finite job.

    A file that a restore rolled back after it had shown done is still read to its end by the drain
    (Beam's operator drains its splittable DoFn in finish()), only without checkpoints: the table is
    the same either way.
    """

    def __init__(self, master: str, job_name: str, files: int, poll_seconds: float = 1.0,
                 stop_attempts: int = 10) -> None:
        import threading

        self.master, self.job_name, self.files = master, job_name, files
        self.poll_seconds, self.stop_attempts = poll_seconds, stop_attempts
        self.done: set[str] = set()  # files (by gauge name) seen read to their end
        self.job: Optional[str] = None  # Flink's job id, once found
        self.stopped_with: Optional[str] = None  # the final savepoint's location
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="flink-drain-at-end-of-replay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._finished.set()
        self._thread.join(timeout=30)

    def _watch(self) -> None:
        import logging

        log = logging.getLogger(__name__)
        stop_failures = 0
        while not self._finished.is_set():
            try:
                if self._job_state() in ("FINISHED", "FAILED", "CANCELED", "SUSPENDED"):
                    return
                if self.job and self._read_to_the_end():
                    self.stopped_with = self._stop_with_drain()
                    log.info("Flink replay %s: every file read; stopped with drain (savepoint %s)",
                             self.job, self.stopped_with)
                    return
            except Exception as error:  # noqa: BLE001 - a busy or restarting cluster: try again
                log.warning("Flink replay %s: end-of-replay watch: %s: %s", self.job, type(error).__name__, error)
                if len(self.done) >= self.files:
                    stop_failures += 1
                    if stop_failures >= self.stop_attempts:
                        # Never leave the launcher waiting for good: the cancel reaches it as an error.
                        log.error("Flink replay %s: %d attempts to stop it with drain failed; cancelling it",
                                  self.job, stop_failures)
                        self._cancel()
                        return
                self._finished.wait(5.0)
                continue
            self._finished.wait(self.poll_seconds)

    def _job_state(self) -> Optional[str]:
        jobs = [j for j in _rest(self.master, "/jobs/overview")["jobs"] if j["name"] == self.job_name]
        if not jobs:
            return None
        newest = max(jobs, key=lambda j: j["start-time"])
        self.job = newest["jid"]
        return newest["state"]

    def _read_to_the_end(self) -> bool:
        """Has every replayed file shown its FILE_DONE gauge (now or at an earlier poll)?"""
        import urllib.parse

        from kappaflow.core import metrics

        marker = "kappaflow_" + metrics.SOURCE_WATERMARK_PREFIX.replace(":", "_")
        for vertex in _rest(self.master, f"/jobs/{self.job}")["vertices"]:
            base = f"/jobs/{self.job}/vertices/{vertex['id']}/metrics"
            names = [urllib.parse.quote(m["id"], safe="") for m in _rest(self.master, base) if marker in m["id"]]
            for query in gauge_queries(names):
                for gauge in _rest(self.master, f"{base}?get={query}"):
                    if gauge.get("value") == str(metrics.FILE_DONE):
                        self.done.add(gauge["id"].split(".", 1)[1])  # without the subtask index
        return len(self.done) >= self.files

    def _stop_with_drain(self) -> str:
        import shutil
        import tempfile
        import time

        configured = {e["key"]: e["value"] for e in _rest(self.master, "/jobmanager/config")}
        ours = None if configured.get("state.savepoints.dir") else tempfile.mkdtemp(prefix="kappaflow-end-")
        body = {"drain": True, **({"targetDirectory": ours} if ours else {})}
        trigger = _rest(self.master, f"/jobs/{self.job}/stop", body)["request-id"]
        try:
            while True:
                status = _rest(self.master, f"/jobs/{self.job}/savepoints/{trigger}")
                if status["status"]["id"] == "COMPLETED":
                    operation = status["operation"]
                    if "failure-cause" in operation:
                        cause = operation["failure-cause"]
                        raise RuntimeError(cause.get("class", "") + ": " + (cause.get("stack-trace") or "")[:500])
                    return operation["location"]
                time.sleep(0.5)
        finally:
            if ours:
                shutil.rmtree(ours, ignore_errors=True)

    def _cancel(self) -> None:
        import urllib.request

        urllib.request.urlopen(urllib.request.Request(f"http://{self.master}/jobs/{self.job}?mode=cancel",
                                                      method="PATCH"), timeout=30)


class KappaflowFlinkRunner(FlinkRunner):
    """Beam's FlinkRunner, submitting through our job server instead of a downloaded jar."""

    def __init__(self, end_of_replay: Optional[DrainAtEndOfReplay] = None) -> None:
        super().__init__()
        self.end_of_replay = end_of_replay

    def default_job_server(self, options: PipelineOptions) -> job_server.JobServer:
        return _shared_job_server()

    def run_pipeline(self, pipeline, options: PipelineOptions):
        result = super().run_pipeline(pipeline, options)
        if self.end_of_replay is not None:
            self.end_of_replay.start()
        return result


def _reads_forever(options: PipelineOptions) -> bool:
    """A live Kafka read (no --kafka_max_records/--kafka_max_read_seconds). Its Impulse source must
    stay up: once a source has finished Flink takes no more checkpoints, and KafkaIO commits its
    offsets only when a checkpoint completes."""
    from kappaflow.options import KappaflowOptions
    from kappaflow.wiring import kafka_read_config

    kafka = kafka_read_config(options.view_as(KappaflowOptions))
    return kafka is not None and kafka.max_records is None and kafka.max_read_seconds is None


def _replayed_files(options: PipelineOptions) -> Optional[int]:
    """How many files a streaming run replays (None: its input is not files, e.g. Kafka, Pub/Sub)."""
    from io_connectors.bigquery import is_bigquery_url
    from io_connectors.files import expand_pattern
    from io_connectors.kafka import is_kafka_url
    from kappaflow.options import KappaflowOptions

    own = options.view_as(KappaflowOptions)
    if getattr(own, "input_subscription", None) or not own.input or is_kafka_url(own.input) \
            or is_bigquery_url(own.input):
        return None
    try:
        return len(expand_pattern(own.input))
    except FileNotFoundError:
        return None  # the graph's construction says so, as on every runner


def resolve(options: PipelineOptions) -> tuple[KappaflowFlinkRunner, str]:
    flink = options.view_as(FlinkRunnerOptions)
    if flink.flink_master in (None, "", "[auto]"):
        flink.flink_master = "[local]"
    # Flink's REST client wants host:port; Beam's FlinkRunner would add http:// to it.
    flink.flink_master = flink.flink_master.removeprefix("http://")
    if flink.flink_job_server_jar:
        raise ValueError("--flink_job_server_jar: kappaflow starts Flink's job server from the classpath "
                         "that `make setup-flink` assembles; no job-server jar is used")
    portable = options.view_as(PortableOptions)
    # The SDK harness runs in this process (a local cluster connects back to it on loopback).
    portable.environment_type = portable.environment_type or "LOOPBACK"
    streaming = bool(options.view_as(StandardOptions).streaming)
    checkpoints = options.view_as(CheckpointOptions)
    if streaming and checkpoints.checkpointing_interval is None:
        checkpoints.checkpointing_interval = DEFAULT_CHECKPOINT_MS
    if streaming and checkpoints.finish_bundle_before_checkpointing is None:
        checkpoints.finish_bundle_before_checkpointing = True
    if streaming and checkpoints.max_bundle_time_mills is None:
        checkpoints.max_bundle_time_mills = DEFAULT_BUNDLE_TIME_MS
    end_of_replay = None
    files = _replayed_files(options) if streaming else None
    if files and flink.flink_master != "[local]":
        # The source stays up (Beam's default with checkpoints) and the job is drained once every
        # file has been read: checkpoints for the whole replay (see the notes at the top).
        cloud = options.view_as(GoogleCloudOptions)
        cloud.job_name = cloud.job_name or f"kappaflow-replay-{uuid.uuid4().hex[:12]}"
        end_of_replay = DrainAtEndOfReplay(flink.flink_master, cloud.job_name, files)
    elif streaming and checkpoints.shutdown_sources_after_idle_ms is None and not _reads_forever(options):
        checkpoints.shutdown_sources_after_idle_ms = DEFAULT_IDLE_SHUTDOWN_MS
    if streaming and flink.flink_master == "[local]" and checkpoints.state_backend is None:
        # Embedded Flink keeps checkpoints in the JobManager's memory, at most 5 MiB per task: a 1M-event
        # replay's state outgrew that, every checkpoint failed and the job restarted for good. On files,
        # as the local cluster does (scripts/flink-cluster.sh).
        checkpoints.state_backend = "filesystem"
        if checkpoints.state_backend_storage_path is None:
            directory = tempfile.mkdtemp(prefix="kappaflow-flink-checkpoints-")
            atexit.register(shutil.rmtree, directory, ignore_errors=True)
            checkpoints.state_backend_storage_path = "file://" + directory
    where = ("embedded Flink" if flink.flink_master == "[local]"
             else f"Flink cluster {flink.flink_master}")
    label = (f"FlinkRunner (Beam {BEAM_VERSION} Flink {FLINK_MINOR} job server, {where}, "
             f"{portable.environment_type}")
    if streaming:
        interval = checkpoints.checkpointing_interval
        label += f", checkpoints every {interval} ms" if interval and interval > 0 else ", no checkpoints"
    if end_of_replay is not None:
        label += ", drained when every file is read"
    return KappaflowFlinkRunner(end_of_replay), label + ")"
