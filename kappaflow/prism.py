"""Prism, Beam's portable local runner, from the binary scripts/setup-prism.sh builds.

Without `--prism_location` Beam's PrismRunner downloads a release binary from the internet; here it
always gets the cached one, built from the Go module at the SDK's exact version.
"""

from __future__ import annotations

import os

from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions, PrismRunnerOptions
from apache_beam.runners.portability.prism_runner import PrismRunner

from kappaflow.runner_cache import BEAM_VERSION, cache_dir, require

__all__ = ["binary", "resolve"]


def binary() -> str:
    return require(os.path.join(cache_dir(), "prism", BEAM_VERSION, "prism"),
                   f"Prism {BEAM_VERSION}", "setup-prism")


def resolve(options: PipelineOptions) -> tuple[PrismRunner, str]:
    prism = options.view_as(PrismRunnerOptions)
    if not prism.prism_location:
        prism.prism_location = binary()
    # The SDK harness runs in this process: local paths (SQLite files) mean the same thing there.
    portable = options.view_as(PortableOptions)
    portable.environment_type = portable.environment_type or "LOOPBACK"
    return PrismRunner(), f"PrismRunner (prism {BEAM_VERSION}, {portable.environment_type})"
