"""Shared helpers: explicit runners, counter lookup, small event factories."""

from __future__ import annotations

import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.testing.test_pipeline import TestPipeline

from kappaflow import beam_workarounds
from kappaflow.core import metrics

# Real servers on loopback, started on demand by the tests that use them.
from fixtures_bigquery import bigquery_emulator, bigquery_front  # noqa: F401,E402
from fixtures_kafka import kafka_broker, shared_java_services  # noqa: F401,E402
from fixtures_postgres import own_postgres_server, postgres_server, postgres_url  # noqa: F401,E402
from fixtures_pubsub import pubsub_emulator  # noqa: F401,E402


def pytest_configure(config):
    config.addinivalue_line("filterwarnings", "ignore:cannot collect test class 'TestStream'")


def batch_pipeline() -> TestPipeline:
    return TestPipeline(runner=fn_runner.FnApiRunner(), options=PipelineOptions([]))


def streaming_pipeline() -> TestPipeline:
    # Without the fix the streaming DirectRunner reports only the first bundle's counters.
    beam_workarounds.keep_streaming_metrics()
    return TestPipeline(runner=BundleBasedDirectRunner(), options=PipelineOptions(["--streaming"]))


def prism_pipeline() -> TestPipeline:
    """Prism, the local streaming runner, as the launcher resolves it (cached binary, LOOPBACK)."""
    from kappaflow import prism

    options = PipelineOptions(["--streaming"])
    runner, _ = prism.resolve(options)
    return TestPipeline(runner=runner, options=options)


def counter(result, name: str, namespace: str = metrics.NAMESPACE) -> int:
    query = result.metrics().query(MetricsFilter().with_namespace(namespace).with_name(name))
    total = 0
    for c in query["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        total += value or 0
    return total


def _runner(make_pipeline):
    """Build with `build(p)`, run, return the PipelineResult."""

    def run(build):
        p = make_pipeline()
        build(p)
        result = p.run()
        result.wait_until_finish()
        return result

    return run


@pytest.fixture
def run_batch():
    return _runner(batch_pipeline)


@pytest.fixture
def run_streaming():
    return _runner(streaming_pipeline)


@pytest.fixture
def run_prism():
    return _runner(prism_pipeline)


@pytest.fixture
def count_of():
    return counter


def clickstream_sample(directory, **config) -> tuple[str, str]:
    """The sample generator's events (directory/events.jsonl) and its reference database (ref.db)."""
    from kappaflow.samples.clickstream import SampleConfig, build_reference_db, write_sample

    sample = SampleConfig(**config)
    events, reference = f"{directory}/events.jsonl", f"sqlite:///{directory}/ref.db"
    write_sample(events, sample)
    build_reference_db(reference, sample)
    return events, reference



def registered_actions(cls: type[PipelineOptions]) -> list:
    """The argparse actions Beam's parser gets from `cls` and its bases (their `_add_argparse_args`),
    except Beam's own: what a run parses, to hold the help, the checks and the templates against."""
    import argparse

    parser = argparse.ArgumentParser(add_help=False)
    for klass in reversed(cls.mro()):
        if (issubclass(klass, PipelineOptions) and not klass.__module__.startswith("apache_beam")
                and "_add_argparse_args" in vars(klass)):
            klass._add_argparse_args(parser)
    return list(parser._actions)
