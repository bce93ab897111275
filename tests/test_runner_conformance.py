"""Cross-runner conformance: the same graph and input on every runner end with the same tables.

Adding a pipeline is one `PipelineCase` in PIPELINES. Runners: the DirectRunner (batch, streaming
replay), Prism (batch, streaming), embedded Flink (batch, streaming) and, for the first pipeline, a
local standalone Flink cluster. The Prism binary and the Flink job-server classpath come from
`make runners` (a dependency of `make test`); a missing one fails these tests, it never skips them.

Two samples per pipeline:
- "ordered": lateness covers the disorder, so every run must give the batch table and accounting;
- "late": some records are later than the allowed lateness. Which ones a streaming run finds too
  late depends on the runner's watermark timing, so the invariant is: the accounting balances, the
  dead letters are exactly the too-late records, and the table is the batch table minus them.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Callable, Optional

import pytest

from kappaflow.core.schemas.clickstream import CLICKSTREAM_METRICS
from kappaflow.core.schemas.iot import SENSOR_ALERTS, SENSOR_STATS
from kappaflow.launcher import Accounting, run
from kappaflow.samples import cdc as cdc_samples
from kappaflow.samples import clickstream as clickstream_samples
from kappaflow.samples import iot as iot_samples
from kappaflow.tables import diff_tables, explain_difference, read_change_tables, read_rows, too_late_records
from pipelines import cdc, clickstream, iot_sensors

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@dataclasses.dataclass(frozen=True)
class PipelineCase:
    module: ModuleType  # a pipelines.<name> module: PIPELINE, build, options class
    options_class: type
    # output URL → every output row, keyed, without what differs between runs by design
    read_output: Callable[[str], dict]
    # (directory, with too-late records?) → --input value and extra arguments (e.g. reference data)
    make_sample: Callable[[Path, bool], tuple[str, tuple[str, ...]]]
    # (batch rows, streaming rows, too-late dead letters) → is streaming = batch minus them?
    # None: the pipeline has no too-late sample (no windows, or no exact explanation yet).
    explain: Optional[Callable[[dict, dict, list], bool]] = None

    @property
    def name(self) -> str:
        return self.module.PIPELINE


def _clickstream_sample(directory: Path, too_late: bool) -> tuple[str, tuple[str, ...]]:
    # Late sample: one event per second for an hour, 2% of them 25-50 min late (lateness 15 min).
    config = (clickstream_samples.SampleConfig(events=3600, events_per_second=1.0, too_late_share=0.02)
              if too_late else clickstream_samples.SampleConfig(events=1500, too_late_share=0.0))
    events = str(directory / "events.jsonl")
    reference = f"sqlite:///{directory}/reference.db"
    clickstream_samples.write_sample(events, config)
    clickstream_samples.build_reference_db(reference, config)
    return events, (f"--reference_db={reference}",)


def _iot_sample(directory: Path, too_late: bool) -> tuple[str, tuple[str, ...]]:
    assert not too_late, "no too-late IoT sample"
    config = iot_samples.SampleConfig(readings=1500)  # its late readings stay within the lateness
    readings = str(directory / "readings.jsonl")
    reference = f"sqlite:///{directory}/reference.db"
    iot_samples.write_sample(readings, config)
    iot_samples.build_reference_db(reference, config)
    return readings, (f"--reference_db={reference}", "--ingest_time_field=ingest_time")


def _iot_output(url: str) -> dict:
    stats = {("stats", *k): v for k, v in read_rows(url, SENSOR_STATS).items()}
    alerts = {("alert", *k): {c: x for c, x in v.items() if c != "created_at"}  # when a run raised it
              for k, v in read_rows(url, SENSOR_ALERTS).items()}
    return {**stats, **alerts}


def _cdc_sample(directory: Path, too_late: bool) -> tuple[str, tuple[str, ...]]:
    assert not too_late, "CDC has no windows, so nothing is too late"
    cdc_samples.write_sample(str(directory), cdc_samples.CdcSampleConfig(changes=1500))
    return f"{directory}/*.jsonl", (f"--primary_keys={cdc_samples.PRIMARY_KEYS}",)


def _cdc_output(url: str) -> dict:
    return {(table, *key): row for table, rows in read_change_tables(url).items() for key, row in rows.items()}


PIPELINES = (
    PipelineCase(clickstream, clickstream.ClickstreamOptions, lambda url: read_rows(url, CLICKSTREAM_METRICS),
                 _clickstream_sample, explain_difference),
    PipelineCase(iot_sensors, iot_sensors.IotSensorsOptions, _iot_output, _iot_sample),
    PipelineCase(cdc, cdc.CdcOptions, _cdc_output, _cdc_sample),
)


@dataclasses.dataclass(frozen=True)
class RunnerCase:
    id: str
    args: tuple[str, ...]
    label: str  # what the accounting must say ran
    # Does this runner show the router a record behind its watermark? Prism holds a stage's
    # watermark at the records still in flight to it, so three shuffles after the source no record
    # is ever behind it: nothing is too late and the table is the batch table (see README).
    finds_too_late: bool = True

    @property
    def streaming(self) -> bool:
        return "--streaming" in self.args


STREAM = ("--streaming", "--replay_chunk_size=200")
RUNNERS = (
    RunnerCase("direct-batch", (), "FnApiRunner"),
    RunnerCase("direct-streaming", STREAM, "the local streaming runner", finds_too_late=False),
    RunnerCase("prism-batch", ("--runner=PrismRunner",), "PrismRunner"),
    RunnerCase("prism-streaming", ("--runner=PrismRunner", *STREAM), "PrismRunner", finds_too_late=False),
    RunnerCase("flink-batch", ("--runner=FlinkRunner",), "embedded Flink"),
    RunnerCase("flink-streaming", ("--runner=FlinkRunner", *STREAM), "checkpoints every"),
)
CLUSTER = RunnerCase("flink-cluster-streaming", ("--runner=FlinkRunner", *STREAM), "Flink cluster")


@dataclasses.dataclass(frozen=True)
class Sample:
    input: str
    args: tuple[str, ...]
    batch: Accounting
    batch_rows: dict


def _run(case: PipelineCase, sample_input: str, sample_args: tuple[str, ...], output: str,
         *args: str) -> Accounting:
    return run(case.name, case.module.build,
               [f"--input={sample_input}", f"--output={output}", *sample_args, *args], case.options_class)


@pytest.fixture(scope="session")
def samples(tmp_path_factory):
    """(pipeline, too_late) → the sample and its DirectRunner batch reference, made once."""
    made: dict[tuple[str, bool], Sample] = {}

    def get(case: PipelineCase, too_late: bool) -> Sample:
        if (case.name, too_late) not in made:
            directory = tmp_path_factory.mktemp(f"{case.name}-{'late' if too_late else 'ordered'}")
            sample_input, sample_args = case.make_sample(directory, too_late)
            output = f"sqlite:///{directory}/reference-batch.db"
            batch = _run(case, sample_input, sample_args, output)
            assert batch.balanced and batch.too_late == 0, batch
            made[case.name, too_late] = Sample(sample_input, sample_args, batch, case.read_output(output))
        return made[case.name, too_late]

    return get


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def flink_cluster():
    """A standalone cluster (scripts/flink-cluster.sh) on free ports, for the whole session."""
    env = {**os.environ, "FLINK_REST_PORT": str(_free_port()), "FLINK_RPC_PORT": str(_free_port())}
    script = str(ROOT / "scripts" / "flink-cluster.sh")
    subprocess.run(["bash", script, "start"], env=env, check=True, timeout=120)
    try:
        yield {"master": f"127.0.0.1:{env['FLINK_REST_PORT']}", "script": script, "env": env}
    finally:
        subprocess.run(["bash", script, "stop"], env=env, check=False, timeout=120)


def _runner_params():
    for case in PIPELINES:
        for runner in RUNNERS:
            yield pytest.param(case, runner, id=f"{case.name}-{runner.id}")
    yield pytest.param(PIPELINES[0], CLUSTER, id=f"{PIPELINES[0].name}-{CLUSTER.id}")


def _args(runner: RunnerCase, request) -> tuple[str, ...]:
    if runner is CLUSTER:
        return (*runner.args, f"--flink_master={request.getfixturevalue('flink_cluster')['master']}")
    return runner.args


@pytest.mark.parametrize("case,runner", _runner_params())
def test_same_table_and_accounting(case, runner, samples, tmp_path, request):
    sample = samples(case, too_late=False)
    output = f"sqlite:///{tmp_path}/out.db"
    acc = _run(case, sample.input, sample.args, output, *_args(runner, request))

    assert runner.label in acc.runner, acc.runner
    assert acc.mode == ("streaming" if runner.streaming else "batch")
    assert acc.balanced, acc.summary()
    # CDC: how re-deliveries split between duplicates and superseded depends on arrival order.
    counts = lambda a: (a.read, a.invalid, a.too_late, a.enrich_failed, a.aggregated,
                        a.duplicates + a.applied + a.superseded)
    assert counts(acc) == counts(sample.batch), acc.summary()
    rows = case.read_output(output)
    diff = diff_tables(sample.batch_rows, rows)
    assert diff.identical, diff.summary()


def _streaming_params():
    for case in PIPELINES:
        if case.explain is None:
            continue
        for runner in RUNNERS:
            if runner.streaming:
                yield pytest.param(case, runner, id=f"{case.name}-{runner.id}")


@pytest.mark.parametrize("case,runner", _streaming_params())
def test_too_late_records_are_the_difference(case, runner, samples, tmp_path, request):
    sample = samples(case, too_late=True)
    output = f"sqlite:///{tmp_path}/out.db"
    acc = _run(case, sample.input, sample.args, output, *_args(runner, request))

    assert acc.balanced, acc.summary()
    assert (acc.read, acc.invalid) == (sample.batch.read, sample.batch.invalid)
    # The router runs before the dedup: a too-late copy counts as too late, not as a duplicate.
    assert sample.batch.duplicates - acc.too_late <= acc.duplicates <= sample.batch.duplicates, acc.summary()
    late = too_late_records(output, case.name)
    # Too-late copies of one event share their dead-letter row (its id is deterministic).
    assert len(late) <= acc.too_late <= len(late) + sample.batch.duplicates, acc.summary()
    if runner.finds_too_late:
        assert acc.too_late > 0, acc.summary()
    rows = case.read_output(output)
    assert case.explain(sample.batch_rows, rows, late), diff_tables(sample.batch_rows, rows).summary()


def _rest(master: str, path: str):
    import json
    import urllib.request

    with urllib.request.urlopen(f"http://{master}{path}", timeout=10) as response:
        return json.load(response)


def test_flink_cluster_survives_a_killed_taskmanager(samples, tmp_path, flink_cluster):
    """Kill -9 the TaskManager after the first completed checkpoint of a streaming replay, start a
    new one: the job restarts from the checkpoint and ends with the batch table (the upsert sinks
    absorb the replayed records; restored dedup and window state count each event once)."""
    import threading
    import time

    case = PIPELINES[0]
    sample = samples(case, too_late=False)
    output = f"sqlite:///{tmp_path}/out.db"
    master, cluster = flink_cluster["master"], ["bash", flink_cluster["script"]]
    killed: dict = {}
    replay_done = threading.Event()

    def kill_after_first_checkpoint() -> None:
        # Beam's launcher needs the main thread (signal handlers): the killer runs beside it.
        deadline = time.monotonic() + 300
        try:
            while time.monotonic() < deadline and not replay_done.is_set():
                running = [j for j in _rest(master, "/jobs/overview")["jobs"] if j["state"] == "RUNNING"]
                if running and _rest(master, f"/jobs/{running[0]['jid']}/checkpoints")["counts"]["completed"]:
                    killed["job"] = running[0]["jid"]
                    subprocess.run([*cluster, "kill-taskmanager"], env=flink_cluster["env"], check=True, timeout=60)
                    subprocess.run([*cluster, "start-taskmanager"], env=flink_cluster["env"], check=True,
                                   timeout=120)
                    return
                replay_done.wait(0.2)
        except Exception as error:  # noqa: BLE001 - reported by the main thread
            killed["error"] = error

    killer = threading.Thread(target=kill_after_first_checkpoint, daemon=True)
    killer.start()
    try:
        _run(case, sample.input, sample.args, output, "--runner=FlinkRunner", f"--flink_master={master}",
             "--streaming", "--replay_chunk_size=20", "--checkpointing_interval=1000")
    finally:
        replay_done.set()
        killer.join(timeout=130)
    assert "error" not in killed, killed["error"]
    job = killed.get("job")
    assert job, "the replay ended before its first checkpoint: make it longer"
    exceptions = _rest(master, f"/jobs/{job}/exceptions")
    assert exceptions.get("exceptionHistory", {}).get("entries") or exceptions.get("root-exception"), (
        f"no failure recorded for job {job}: the kill did not hit it")
    rows = case.read_output(output)
    diff = diff_tables(sample.batch_rows, rows)
    assert diff.identical, diff.summary()
