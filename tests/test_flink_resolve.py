"""How a Flink run is set up (kappaflow/flink.py resolve), without starting Flink: which streaming
runs end by the end-of-replay drain and which by the idle source, as docs/runners.md says."""

from __future__ import annotations

import os
import urllib.parse

from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

from kappaflow import flink
from kappaflow.options import KappaflowOptions  # noqa: F401 - registers --input for the views below


def _resolve(*args: str):
    options = PipelineOptions(["--runner=FlinkRunner", *args])
    runner, label = flink.resolve(options)
    return runner, label, options


def test_a_file_replay_on_a_cluster_is_drained_once_every_file_is_read(tmp_path):
    for name in ("a.jsonl", "b.jsonl"):
        (tmp_path / name).write_text("{}\n")
    runner, label, options = _resolve("--streaming", "--flink_master=127.0.0.1:8081", f"--input={tmp_path}/*.jsonl")
    watch = runner.end_of_replay
    assert watch is not None and (watch.master, watch.files) == ("127.0.0.1:8081", 2)
    # The source stays up (Beam's default, never with checkpoints): the drain ends the job.
    assert options.view_as(flink.CheckpointOptions).shutdown_sources_after_idle_ms is None
    # The watch finds the job by a name of its own.
    assert watch.job_name == options.view_as(GoogleCloudOptions).job_name and watch.job_name.startswith("kappaflow-")
    assert "drained when every file is read" in label
    # A replay's next chunk waits for the bundle before it to finish: 100 ms, not Beam's 1 s.
    assert options.view_as(flink.CheckpointOptions).max_bundle_time_mills == flink.DEFAULT_BUNDLE_TIME_MS


def test_the_job_name_given_is_kept(tmp_path):
    (tmp_path / "a.jsonl").write_text("{}\n")
    runner, _, _ = _resolve("--streaming", "--flink_master=127.0.0.1:8081", f"--input={tmp_path}/a.jsonl",
                            "--job_name=nightly-replay")
    assert runner.end_of_replay.job_name == "nightly-replay"


def test_embedded_flink_and_kafka_keep_the_idle_source_shutdown(tmp_path):
    (tmp_path / "a.jsonl").write_text("{}\n")
    runner, label, options = _resolve("--streaming", f"--input={tmp_path}/a.jsonl")  # embedded: no REST endpoint
    assert runner.end_of_replay is None and "drained" not in label
    assert options.view_as(flink.CheckpointOptions).shutdown_sources_after_idle_ms == flink.DEFAULT_IDLE_SHUTDOWN_MS
    runner, _, options = _resolve("--streaming", "--flink_master=127.0.0.1:8081", "--input=kafka://127.0.0.1:9/t",
                                  "--kafka_max_records=10")
    assert runner.end_of_replay is None
    assert options.view_as(flink.CheckpointOptions).shutdown_sources_after_idle_ms == flink.DEFAULT_IDLE_SHUTDOWN_MS


def test_batch_has_no_drain(tmp_path):
    (tmp_path / "a.jsonl").write_text("{}\n")
    runner, _, _ = _resolve("--flink_master=127.0.0.1:8081", f"--input={tmp_path}/a.jsonl")
    assert runner.end_of_replay is None


def test_embedded_flink_streaming_checkpoints_to_files_not_the_jobmanager_s_memory(tmp_path):
    # Flink's default checkpoint storage holds at most 5 MiB per task: a 1M-event replay's state
    # outgrew it, every checkpoint failed and the job restarted for good.
    _, _, options = _resolve(f"--input={tmp_path}/a.jsonl", "--streaming")
    checkpoints = options.view_as(flink.CheckpointOptions)
    assert checkpoints.state_backend == "filesystem"
    assert checkpoints.state_backend_storage_path.startswith("file:///")
    assert os.path.isdir(checkpoints.state_backend_storage_path.removeprefix("file://"))
    # what the user chose is kept; a cluster keeps its own configuration; batch takes no checkpoints
    _, _, chosen = _resolve(f"--input={tmp_path}/a.jsonl", "--streaming", "--state_backend=rocksdb",
                            "--state_backend_storage_path=file:///data/checkpoints")
    assert chosen.view_as(flink.CheckpointOptions).state_backend == "rocksdb"
    assert chosen.view_as(flink.CheckpointOptions).state_backend_storage_path == "file:///data/checkpoints"
    _, _, cluster = _resolve(f"--input={tmp_path}/a.jsonl", "--streaming", "--flink_master=127.0.0.1:8081")
    assert cluster.view_as(flink.CheckpointOptions).state_backend is None
    _, _, batch = _resolve(f"--input={tmp_path}/a.jsonl")
    assert batch.view_as(flink.CheckpointOptions).state_backend is None


def test_the_end_of_replay_watch_asks_for_the_files_gauges_a_few_at_a_time():
    # Flink's REST server answers 404 to a request line over 4 KiB; a replay's gauges are one per file.
    names = [urllib.parse.quote(f"0.[16]{{ReadInput__ParseEvents}}.kappaflow_replay_watermark_/data/day/part-{i:03d}"
                                "_jsonl", safe="") for i in range(300)]
    queries = list(flink.gauge_queries(names))
    assert len(queries) > 1 and all(len(query) <= flink.MAX_GAUGE_QUERY_CHARS for query in queries)
    assert ",".join(queries).split(",") == names  # each name once, in order
    assert list(flink.gauge_queries(["y" * 3000, "z"])) == ["y" * 3000, "z"]  # one too long alone
    assert list(flink.gauge_queries([])) == []
