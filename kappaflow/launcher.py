"""Run a pipeline built by `build(pipeline, options)`, then print and report its accounting.

`--runner=DirectRunner` (the default) is resolved here, visibly: Beam's DirectRunner would first
try to download and start Prism, then silently fall back. We pick: the FnApiRunner for batch, and
for streaming Prism from the binary the set-up built (the Python streaming DirectRunner cannot
replay files: it holds a splittable DoFn's watermark until the file is done, and it runs stateful
stages at a few hundred records a second). `--runner=PrismRunner` and
`--runner=FlinkRunner` get the binaries the set-up scripts cached (kappaflow/prism.py,
kappaflow/flink.py); the label printed with the accounting says what really ran.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from typing import Callable, Optional, Sequence

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions, StandardOptions

from kappaflow import beam_workarounds, java_services
from kappaflow.core import metrics
from kappaflow.checks import check_dead_letters_reach_a_sink, check_own_options
from kappaflow.errors import ConfigurationError
from kappaflow.options import KappaflowOptions, PubSubInputOptions
from kappaflow.progress import ProgressMonitor, counter_totals, estimate_records, fresh_metrics

__all__ = ["Accounting", "run", "resolve_runner"]

_LOG = logging.getLogger(__name__)
LIVE_JOB_SERVER_TIMEOUT_SECONDS = 365 * 24 * 3600


@dataclasses.dataclass(frozen=True)
class Accounting:
    pipeline: str
    runner: str
    mode: str
    read: int
    invalid: int
    duplicates: int
    too_late: int
    enrich_failed: int
    aggregated: int
    rows_written: int
    dead_letters_written: int
    seconds: float
    excluded: int = 0  # pipelines that exclude records from statistics on purpose (IoT: quality)
    # CDC outcomes (zero for the other pipelines).
    applied: int = 0
    superseded: int = 0
    rejected: int = 0
    # The outcomes the pipeline declares (its options class's OUTCOMES; core/metrics.OUTCOMES).
    outcomes: tuple[str, ...] = tuple(metrics.OUTCOMES)
    dead_letters_failed: int = 0  # refused by the dead-letter table: lost, so never balanced

    @property
    def balanced(self) -> bool:
        """Every record read ended in exactly one of the places the pipeline declares, none elsewhere."""
        undeclared = [name for name in metrics.OUTCOMES if name not in self.outcomes and getattr(self, name)]
        return (not undeclared and not self.dead_letters_failed
                and self.read == sum(getattr(self, name) for name in self.outcomes))

    @property
    def in_flight(self) -> int:
        """Records read but not yet in one of the outcomes (a running or cancelled job)."""
        return self.read - sum(getattr(self, name) for name in self.outcomes)

    def summary(self, state: Optional[str] = None) -> str:
        """The accounting line; `state` ("running", "cancelled") says the job has not drained, so
        records still in flight are shown instead of the balance."""
        rate = self.read / self.seconds if self.seconds else 0.0
        ending = (f"accounting {'balanced' if self.balanced else 'UNBALANCED'}" if state is None
                  else f"in flight {self.in_flight:,}")
        return (
            f"[{self.pipeline}] {self.mode} on {self.runner}{', ' + state if state else ''}: "
            f"read {self.read:,} | invalid {self.invalid:,} | "
            f"duplicates {self.duplicates:,} | too late {self.too_late:,} | enrich failed "
            f"{self.enrich_failed:,} | excluded {self.excluded:,} | aggregated {self.aggregated:,} | "
            f"{self._change_outcomes()}"
            f"rows written {self.rows_written:,} | "
            f"dead letters written {self.dead_letters_written:,} | {self._failed_dead_letters()}{self.seconds:.1f}s "
            f"({rate:,.0f} records/s) | {ending}"
        )

    def _failed_dead_letters(self) -> str:
        return f"dead letters LOST {self.dead_letters_failed:,} | " if self.dead_letters_failed else ""

    def _change_outcomes(self) -> str:
        if not (self.applied or self.superseded or self.rejected):
            return ""
        return (f"applied {self.applied:,} | superseded {self.superseded:,} | "
                f"rejected {self.rejected:,} | ")

    def to_json(self) -> str:
        return json.dumps({**dataclasses.asdict(self), "balanced": self.balanced}, indent=2, sort_keys=True)


def resolve_runner(options: PipelineOptions) -> tuple[object, str]:
    standard = options.view_as(StandardOptions)
    name = standard.runner or "DirectRunner"
    beam_workarounds.no_sampling_thread()  # each runner below may run its SDK workers in this process
    if name in ("DirectRunner", "direct"):
        if standard.streaming and options.view_as(PubSubInputOptions).input_subscription:
            # Beam's Python Pub/Sub source runs only on the Python DirectRunner (and Dataflow).
            from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner

            beam_workarounds.keep_streaming_metrics()
            return BundleBasedDirectRunner(), "DirectRunner (BundleBasedDirectRunner, streaming from Pub/Sub)"
        if standard.streaming:
            from kappaflow import prism

            runner, label = prism.resolve(options)
            return runner, f"{label}, the local streaming runner"
        from apache_beam.runners.portability.fn_api_runner import fn_runner

        beam_workarounds.disable_embedded_state_cache()
        beam_workarounds.one_pane_per_window_in_batch()
        beam_workarounds.lean_batch_shuffle()
        beam_workarounds.flattens_inside_stages()
        return fn_runner.FnApiRunner(), "DirectRunner (FnApiRunner, batch)"
    if name in ("PrismRunner", "prism"):
        from kappaflow import prism

        return prism.resolve(options)
    if name in ("FlinkRunner", "flink"):
        from kappaflow import flink

        return flink.resolve(options)
    return name, name


def read_accounting(result: beam.runners.runner.PipelineResult, pipeline: str, runner: str, mode: str,
                    seconds: float, outcomes: tuple[str, ...] = tuple(metrics.OUTCOMES)) -> Accounting:
    """The accounting from a job's counters, as they stand now (running, drained or cancelled)."""
    totals = counter_totals(fresh_metrics(result).query(MetricsFilter().with_namespace(metrics.NAMESPACE)))
    return Accounting(
        pipeline=pipeline, runner=runner, mode=mode, seconds=seconds, outcomes=outcomes,
        read=totals.get(metrics.READ, 0), rows_written=totals.get(metrics.ROWS_WRITTEN, 0),
        dead_letters_written=totals.get(metrics.DEAD_LETTERS_WRITTEN, 0),
        dead_letters_failed=totals.get(metrics.DEAD_LETTERS_FAILED, 0),
        **{name: totals.get(outcome.counter, 0) for name, outcome in metrics.OUTCOMES.items()})


def _wait_reporting_a_stop(result: beam.runners.runner.PipelineResult, account: Callable[[], Accounting]) -> None:
    """Wait for the job. Ctrl-C cancels it (not only this client); a job cancelled by Ctrl-C or from
    outside (e.g. `flink cancel`) prints its accounting as it stood, then the error goes on."""
    import signal
    import threading

    from apache_beam.runners.runner import PipelineState

    # Beam's job-server wrapper answers SIGINT by stopping the job server first (Prism: the job with
    # it; a Flink cluster's job runs on, unseen): here Ctrl-C only interrupts the wait.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler) if main else None
    try:
        result.wait_until_finish()
    except BaseException as stop:
        # Beam's Flink job server reports a job cancelled on the cluster as FAILED.
        cancelled = (getattr(result, "_state", None) == PipelineState.CANCELLED
                     or "JobCancellationException" in str(stop))
        if not isinstance(stop, KeyboardInterrupt) and not cancelled:
            raise
        try:
            if isinstance(stop, KeyboardInterrupt):
                result.cancel()
            print(account().summary("cancelled"), flush=True)
        except Exception as err:  # noqa: BLE001 - the job service is gone: say so, keep the real error
            print(f"(no accounting after the cancel: {type(err).__name__}: {err})", file=sys.stderr, flush=True)
        raise
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)


def _store_true_flags() -> set[str]:
    """Every boolean (store_true) option of Beam's and ours, by name."""
    import argparse

    flags: set[str] = set()
    pending = [PipelineOptions]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if "_add_argparse_args" in vars(cls):
            parser = argparse.ArgumentParser(add_help=False)
            cls._add_argparse_args(parser)
            flags.update(a.dest for a in parser._actions if a.nargs == 0 and a.const is True)
    return flags


def normalize_boolean_flags(argv: Sequence[str]) -> list[str]:
    """`--streaming=true` → `--streaming`, `--streaming=false` → nothing: how Dataflow flex
    templates pass boolean parameters, which argparse's store_true flags reject."""
    import re

    flags = None
    out = []
    for arg in argv:
        match = re.fullmatch(r"--(\w+)=(true|false)", arg, flags=re.IGNORECASE)
        if match:
            flags = flags if flags is not None else _store_true_flags()
            if match.group(1) in flags:
                if match.group(2).lower() == "true":
                    out.append(f"--{match.group(1)}")
                continue
        out.append(arg)
    return out


def run(
    pipeline_name: str,
    build: Callable[[beam.Pipeline, KappaflowOptions], None],
    argv: Optional[Sequence[str]] = None,
    options_class: type[KappaflowOptions] = KappaflowOptions,
) -> Accounting:
    argv = normalize_boolean_flags(sys.argv[1:] if argv is None else argv)
    check_own_options(pipeline_name, options_class, argv)
    options = PipelineOptions(argv)
    own = options.view_as(options_class)
    if not own.input and not getattr(own, "input_subscription", None):
        raise SystemExit(f"{pipeline_name}: --input (files, bigquery:P.D.T) or --input_subscription is required")
    from kappaflow.preflight import EndpointUnavailable, check_endpoints
    from kappaflow.runner_support import UnsupportedOnRunner, check_runner_support

    try:
        check_runner_support(options, own)
    except UnsupportedOnRunner as err:
        raise SystemExit(f"{pipeline_name}: {err}") from None  # one line, before any job starts

    try:
        check_endpoints(own)
    except EndpointUnavailable as err:
        raise SystemExit(f"{pipeline_name}: {err}") from None  # one line, exit status 1
    runner, runner_label = resolve_runner(options)
    streaming = bool(options.view_as(StandardOptions).streaming)
    if streaming and "job_server_timeout" not in options.get_all_options(drop_default=True):
        # Beam puts --job_server_timeout (300 s) as the deadline on a portable job's state stream:
        # a live job would fail on the client after 5 minutes while it runs on.
        options.view_as(PortableOptions).job_server_timeout = LIVE_JOB_SERVER_TIMEOUT_SECONDS
    started = time.monotonic()
    pipeline = beam.Pipeline(runner=runner, options=options)
    try:
        try:
            build(pipeline, own)
        except (ValueError, FileNotFoundError) as err:  # the graph refused an option: nothing has run
            raise ConfigurationError(str(err)) from err
        check_dead_letters_reach_a_sink(pipeline)
        mode = "streaming" if streaming else "batch"

        def account() -> Accounting:
            return read_accounting(result, pipeline_name, runner_label, mode, time.monotonic() - started,
                                   tuple(options_class.OUTCOMES))

        # A live job prints its accounting every --report_every_seconds while it runs (0: never).
        every = own.report_every_seconds if streaming else 0
        report = (lambda _result, _elapsed: account().summary("running")) if every else None
        progress = ProgressMonitor(pipeline_name, own.progress, own.progress_seconds, estimate_records(own.input),
                                   replay=streaming, report=report, report_every=every or None)
        with progress as monitor:
            result = pipeline.run()
            monitor.follow(result)
            _wait_reporting_a_stop(result, account)
    finally:
        java_services.stop()  # the Java expansion service and workers, if a Java transform started them
    accounting = account()
    print(accounting.summary(), flush=True)
    if own.report:
        from kappaflow.run_report import write_report

        write_report(own.report, accounting, options, monitor.samples)
    return accounting

