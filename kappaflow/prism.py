"""Prism, Beam's portable local runner, from the binary scripts/setup-prism.sh builds.

Without `--prism_location` Beam's PrismRunner downloads a release binary from the internet; here it
always gets the cached one, built from the Go module at the SDK's exact version.
"""

from __future__ import annotations

import os
from typing import Optional

from apache_beam.options.pipeline_options import (
    DebugOptions,
    PipelineOptions,
    PortableOptions,
    PrismRunnerOptions,
)
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.portability import job_server
from apache_beam.runners.portability.prism_runner import PrismJobServer, PrismRunner

from kappaflow.processes import RestartIfGone
from kappaflow.runner_cache import BEAM_VERSION, cache_dir, require

__all__ = ["DISABLE_SPLITS", "binary", "resolve"]

# Prism 2.70 splits a slow bundle of ANY stage (its "SDF split" switch covers them all). On a
# stateful stage a bundle can hold fired timers of some keys and data of others; the SDK answers
# with an index into the data channel, and Prism applies it to the mixed data+timer list, so it
# re-queues data and timers the SDK already processed (apache/beam#35771, "Unexpected split on a
# bundle with timers"). Records then pass our dedup/router twice. Splitting only buys parallelism
# inside a bundle, which a local runner does not need: turn it off.
# tests/test_prism_splits.py shows both the bug and that this switch removes it.
DISABLE_SPLITS = "prism_disable_sdf_split"


def binary() -> str:
    return require(os.path.join(cache_dir(), "prism", BEAM_VERSION, "prism"),
                   f"Prism {BEAM_VERSION}", "setup-prism")


_SHARED: Optional[RestartIfGone] = None


def one_pane_per_window_when_bounded(pipeline: beam_runner_api_pb2.Pipeline) -> None:
    """On a pipeline with no unbounded PCollection, give every windowing strategy the default trigger.

    Prism 2.70 runs a bounded pipeline's triggers as they arrive: a GroupByKey that fires a pane
    per arrival (the dedup's) starts one bundle per key, and a key whose values reach it in two
    upstream bundles gets two panes. The dedup's winner then depends on arrival order (the later
    copy won for all 200 keys in tests/test_dedup.py), and those bundles cost Prism a third of a
    1M-event batch run. Java's batch runners, and the FnApiRunner with kappaflow/beam_workarounds.py,
    emit one pane per window holding all of its values: the same here."""
    bounded = beam_runner_api_pb2.IsBounded.BOUNDED
    if any(pc.is_bounded != bounded for pc in pipeline.components.pcollections.values()):
        return
    for strategy in pipeline.components.windowing_strategies.values():
        strategy.trigger.CopyFrom(beam_runner_api_pb2.Trigger(default=beam_runner_api_pb2.Trigger.Default()))


class KappaflowPrismRunner(PrismRunner):
    """Beam's PrismRunner: one pane per window in a bounded run, and its job server started again
    should it have died since the last run (one Prism per process, like Beam's own singleton: the
    first run's options start it)."""

    def default_job_server(self, options: PipelineOptions) -> job_server.JobServer:
        global _SHARED
        if _SHARED is None:
            _SHARED = RestartIfGone("Prism", lambda: job_server.StopOnExitJobServer(PrismJobServer(options)))
        return _SHARED

    def run_portable_pipeline(self, pipeline: beam_runner_api_pb2.Pipeline, options: PipelineOptions):
        one_pane_per_window_when_bounded(pipeline)
        return super().run_portable_pipeline(pipeline, options)


def resolve(options: PipelineOptions) -> tuple[PrismRunner, str]:
    prism = options.view_as(PrismRunnerOptions)
    if not prism.prism_location:
        prism.prism_location = binary()
    # The SDK harness runs in this process: local paths (SQLite files) mean the same thing there.
    portable = options.view_as(PortableOptions)
    portable.environment_type = portable.environment_type or "LOOPBACK"
    options.view_as(DebugOptions).add_experiment(DISABLE_SPLITS)
    return KappaflowPrismRunner(), f"PrismRunner (prism {BEAM_VERSION}, {portable.environment_type})"
