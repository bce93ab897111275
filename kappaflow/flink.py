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
# With checkpoints on, Beam's Flink runner keeps idle sources (our Impulse) alive forever, so a
# replay never ends. Shut them down at once, as Beam does without checkpoints: measured here, a
# later shutdown (1-20 s) can end the job with the replay's deferred remainder unread (read 20 of
# 1,532 records). Checkpoints go on after a source finished (Flink >= 1.15).
DEFAULT_IDLE_SHUTDOWN_MS = 0
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
        parser.add_argument("--shutdown_sources_after_idle_ms", type=int, default=None,
                            help="Flink: stop sources idle this long, so a finite (replayed) stream "
                                 f"ends the job; with checkpoints it defaults to {DEFAULT_IDLE_SHUTDOWN_MS} "
                                 "(Beam's default then is never).")


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
    if streaming and checkpoints.shutdown_sources_after_idle_ms is None:
        checkpoints.shutdown_sources_after_idle_ms = DEFAULT_IDLE_SHUTDOWN_MS
    where = ("embedded Flink" if flink.flink_master == "[local]"
             else f"Flink cluster {flink.flink_master}")
    label = (f"FlinkRunner (Beam {BEAM_VERSION} Flink {FLINK_MINOR} job server, {where}, "
             f"{portable.environment_type}")
    if streaming:
        interval = checkpoints.checkpointing_interval
        label += f", checkpoints every {interval} ms" if interval and interval > 0 else ", no checkpoints"
    return KappaflowFlinkRunner(), label + ")"
