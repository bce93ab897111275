"""Replay: ReplayFiles on Prism (the local streaming runner): records, event times, resumes, pace."""

from __future__ import annotations

import json
import time

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from io_connectors import files
from io_connectors.replay import ReplayConfig, ReplayFiles
from kappaflow.core.records import RawRecord
from transforms.event_time import EventTimeOf


def test_event_time_of_accepts_dicts_and_iso_text():
    of = EventTimeOf("timestamp")
    assert of(RawRecord({"timestamp": "2024-01-01T00:00:00Z"}, "x")) == 1704067200.0
    assert of(RawRecord(b'{"timestamp": 1704067200000}', "x")) == 1704067200.0
    assert of(RawRecord(b'[1, 2]', "x")) is None
    assert of(RawRecord(b'{"timestamp": "2024-01-01T00:00:00"}', "x")) is None


@pytest.mark.parametrize("kwargs", [dict(max_out_of_orderness_seconds=-1), dict(chunk_size=0), dict(speed=0)])
def test_replay_config_validation(kwargs):
    with pytest.raises(ValueError):
        ReplayConfig(**kwargs)


def write_jsonl(path, times):
    path.write_text("".join(json.dumps({"timestamp": t}) + "\n" for t in times), encoding="utf-8")


def origin_and_timestamp(record, timestamp=beam.DoFn.TimestampParam):
    return record.origin.rsplit("/", 1)[-1], timestamp.micros / 1e6


def test_replay_files_yields_every_record_with_its_event_time(tmp_path, run_prism):
    write_jsonl(tmp_path / "a.jsonl", [100, 160, 130])
    write_jsonl(tmp_path / "b.jsonl", [400, 390.000123])
    (tmp_path / "c.jsonl").write_text('{"timestamp": 50}\n{"timestamp": "garbage"}\n', encoding="utf-8")

    def build(p):
        records = p | ReplayFiles(str(tmp_path / "*.jsonl"), EventTimeOf("timestamp"), ReplayConfig(30, 2))
        assert_that(records | beam.Map(origin_and_timestamp), equal_to([
            ("a.jsonl:1", 100.0), ("a.jsonl:2", 160.0), ("a.jsonl:3", 130.0),
            ("b.jsonl:1", 400.0), ("b.jsonl:2", 390.000123),  # microseconds kept
            ("c.jsonl:1", 50.0), ("c.jsonl:2", 50.0),   # unreadable: the file's max seen so far
        ]))

    run_prism(build)


def test_a_replay_opens_each_file_once_however_many_checkpoints(tmp_path, run_prism, monkeypatch):
    # Resuming after a checkpoint continues the open reader: reading stays linear in the input.
    write_jsonl(tmp_path / "a.jsonl", range(0, 3000, 3))
    write_jsonl(tmp_path / "b.jsonl", range(1, 3000, 3))
    opened = []
    real = files.open_positioned

    def counting(path, start, *args):
        opened.append((path.rsplit("/", 1)[-1], start))
        return real(path, start, *args)

    monkeypatch.setattr("io_connectors.replay.open_positioned", counting)

    def build(p):
        records = p | ReplayFiles(str(tmp_path / "*.jsonl"), EventTimeOf("timestamp"), ReplayConfig(5, 10))
        assert_that(records | beam.Map(lambda r: r.origin.rsplit("/", 1)[-1][0]), equal_to(["a"] * 1000 + ["b"] * 1000))

    run_prism(build)
    assert sorted(opened) == [("a.jsonl", 0), ("b.jsonl", 0)]


def test_replay_speed_paces_event_time(tmp_path, run_prism):
    write_jsonl(tmp_path / "a.jsonl", [100, 101, 102, 103])  # 3 s of event time

    def build(p):
        records = p | ReplayFiles(str(tmp_path / "a.jsonl"), EventTimeOf("timestamp"), ReplayConfig(1, 1, speed=2))
        assert_that(records | beam.Map(origin_and_timestamp), equal_to(
            [("a.jsonl:1", 100.0), ("a.jsonl:2", 101.0), ("a.jsonl:3", 102.0), ("a.jsonl:4", 103.0)]))

    started = time.monotonic()
    run_prism(build)
    assert time.monotonic() - started >= 1.5  # 3 s at 2x


def test_each_record_carries_its_files_watermark_from_before_it(tmp_path, run_prism):
    # The late-data router judges a replayed record by this, so a record far behind the records
    # read before it is too late whatever the runner has published yet (tests/test_late_data.py).
    write_jsonl(tmp_path / "a.jsonl", [100, 160, 130, 10])

    def build(p):
        records = p | ReplayFiles(str(tmp_path / "a.jsonl"), EventTimeOf("timestamp"), ReplayConfig(30, 2))
        assert_that(records | beam.Map(lambda r: (r.origin.rsplit("/", 1)[-1], r.watermark)), equal_to([
            ("a.jsonl:1", float("-inf")), ("a.jsonl:2", 70.0),
            ("a.jsonl:3", 130.0), ("a.jsonl:4", 130.0),  # after a checkpoint: recovered, not reset
        ]))

    run_prism(build)


@pytest.mark.parametrize("speed, chunks", [(None, [50, 50, 0]), (1000.0, "one per 5 s of event time")])
def test_an_unpaced_replay_checkpoints_every_chunk_a_paced_one_also_every_bound_of_event_time(
        tmp_path, run_prism, monkeypatch, speed, chunks):
    # As fast as possible, the watermark advances every chunk_size records (the stamped watermark,
    # not the checkpoint, decides lateness); paced, also every max_out_of_orderness of event time.
    write_jsonl(tmp_path / "a.jsonl", range(1000, 1100))  # a record per second
    from io_connectors.replay import ReplayFileFn

    sizes = []
    real = ReplayFileFn._replay

    def counting(self, path, tracker, watermark):
        sizes.append(0)
        for record in real(self, path, tracker, watermark):
            sizes[-1] += 1
            yield record

    monkeypatch.setattr(ReplayFileFn, "_replay", counting)

    def build(p):
        records = p | ReplayFiles(str(tmp_path / "a.jsonl"), EventTimeOf("timestamp"), ReplayConfig(5, 50, speed))
        assert_that(records | beam.Map(lambda r: 1), equal_to([1] * 100))

    run_prism(build)
    if speed is None:
        assert sizes == chunks
    else:
        assert sum(sizes) == 100 and max(sizes) <= 7 and len(sizes) >= 15, sizes
