"""Flink through Beam's Flink job server, started here from the classpath scripts/setup-flink.sh assembles.

No `beam-runners-flink-*-job-server` jar can be fetched, so Beam's FlinkRunner cannot start its own
job server. We start FlinkJobServerDriver (from `beam-runners-flink-<minor>:<sdk version>`) as a
subprocess on free loopback ports, once per process, and submit through it. The Flink master is a
pipeline option, so one job server serves embedded Flink (`[local]`, the default) and a cluster
(`--flink_master=127.0.0.1:PORT`) alike.
"""

from __future__ import annotations

import functools
import os
import shutil
from typing import Optional

from apache_beam.options.pipeline_options import (
    FlinkRunnerOptions, PipelineOptions, PortableOptions, StandardOptions)
from apache_beam.runners.portability import job_server
from apache_beam.runners.portability.flink_runner import FlinkRunner
from apache_beam.utils import subprocess_server

from kappaflow.runner_cache import BEAM_VERSION, cache_dir, require

__all__ = ["FLINK_MINOR", "CheckpointOptions", "ClasspathJobServer", "KappaflowFlinkRunner", "classpath", "resolve"]

# Beam builds its Flink runner per Flink minor version; a cluster must run the same one.
FLINK_MINOR = "1.19"
DEFAULT_CHECKPOINT_MS = 5000
# Streaming on Beam 2.70's Flink runner, measured on the TaskManager-kill test (1,532 records,
# chunks of 20, checkpoints every 1 s):
# - The replay's Impulse source emits its one element and then waits shutdown_sources_after_idle_ms
#   (Beam's default with checkpoints: forever, so a replay never ends). Once it finishes, the
#   downstream stage drains all remaining SDF work inside its finish() (ExecutableStageDoFnOperator
#   .flushData), and Flink declines to trigger checkpoints meanwhile ("Checkpoint triggering task
#   [8]{ReadInput, ...} is not being executed at the moment"). With 0 ms a checkpoint completed only
#   when triggered in the instant before the source finished (0 in one run, 1 in another).
#   So the source stays up DEFAULT_IDLE_SHUTDOWN_MS and checkpoints are taken meanwhile (a failure
#   after that should restore from the last of them, the restored source waiting again: not measured).
# - With finish_bundle_before_checkpointing=false (Beam's default) the SDF stalled after its first
#   deferred chunk (read 20 of 1,532, no rows written); finishing the bundle at each checkpoint
#   reads the whole replay and survives a killed TaskManager with the identical table.
DEFAULT_IDLE_SHUTDOWN_MS = 10_000
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
        parser.add_argument("--shutdown_sources_after_idle_ms", type=int, default=None,
                            help="Flink: stop sources idle this long, so a finite (replayed) stream "
                                 f"ends the job; streaming runs default to {DEFAULT_IDLE_SHUTDOWN_MS} "
                                 "(Beam's default with checkpoints is never); checkpoints are only "
                                 "taken before the source stops. A Kafka read without a bound keeps "
                                 "Beam's default.")
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
    return job_server.StopOnExitJobServer(ClasspathJobServer())


class KappaflowFlinkRunner(FlinkRunner):
    """Beam's FlinkRunner, submitting through our job server instead of a downloaded jar."""

    def default_job_server(self, options: PipelineOptions) -> job_server.JobServer:
        return _shared_job_server()


def _reads_forever(options: PipelineOptions) -> bool:
    """A live Kafka read (no --kafka_max_records/--kafka_max_read_seconds). Its Impulse source must
    stay up: once a source has finished Flink takes no more checkpoints, and KafkaIO commits its
    offsets only when a checkpoint completes."""
    from kappaflow.options import KappaflowOptions
    from kappaflow.wiring import kafka_read_config

    kafka = kafka_read_config(options.view_as(KappaflowOptions))
    return kafka is not None and kafka.max_records is None and kafka.max_read_seconds is None


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
    if streaming and checkpoints.shutdown_sources_after_idle_ms is None and not _reads_forever(options):
        checkpoints.shutdown_sources_after_idle_ms = DEFAULT_IDLE_SHUTDOWN_MS
    where = ("embedded Flink" if flink.flink_master == "[local]"
             else f"Flink cluster {flink.flink_master}")
    label = (f"FlinkRunner (Beam {BEAM_VERSION} Flink {FLINK_MINOR} job server, {where}, "
             f"{portable.environment_type}")
    if streaming:
        interval = checkpoints.checkpointing_interval
        label += f", checkpoints every {interval} ms" if interval and interval > 0 else ", no checkpoints"
    return KappaflowFlinkRunner(), label + ")"
