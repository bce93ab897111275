"""Replay: the chunk/watermark schedule, and ReplayFiles on the streaming DirectRunner."""

from __future__ import annotations

import json

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from io_connectors.replay import ReplayConfig, ReplayFiles, replay_schedule
from transforms.event_time import EventTimeOf
from transforms.records import RawRecord


def raw(t, n) -> RawRecord:
    return RawRecord(json.dumps({"n": n, "timestamp": t}), f"f:{n}")


def schedule(times, bound, chunk):
    records = [raw(t, n) for n, t in enumerate(times, start=1)]
    return [([(tv.value.origin, float(tv.timestamp)) for tv in batch], wm)
            for batch, wm in replay_schedule(records, EventTimeOf("timestamp"), ReplayConfig(bound, chunk))]


def test_schedule_chunks_and_watermark_is_max_seen_minus_bound():
    assert schedule([100, 130, 90, 200, 150], bound=60, chunk=2) == [
        ([("f:1", 100.0), ("f:2", 130.0)], 70.0),
        ([("f:3", 90.0), ("f:4", 200.0)], 140.0),
        ([("f:5", 150.0)], 140.0),          # an older record does not move the watermark back
    ]


def test_schedule_watermarks_are_monotonic():
    times = [500, 100, 800, 300, 300, 900, 100, 950, 20]
    watermarks = [wm for _, wm in schedule(times, bound=10, chunk=1)]
    assert watermarks == [490, 490, 790, 790, 790, 890, 890, 940, 940]


def test_unreadable_event_time_is_stamped_with_the_max_seen():
    records = [RawRecord(b"not json", "f:1"), raw(100, 2), RawRecord(b'{"timestamp": "soon"}', "f:3"),
               raw(50, 4), RawRecord({"no_time": 1}, "f:5")]
    batches = list(replay_schedule(records, EventTimeOf("timestamp"), ReplayConfig(5, 10)))
    assert [(tv.value.origin, float(tv.timestamp)) for chunk, _ in batches for tv in chunk] == [
        ("f:1", 0.0), ("f:2", 100.0), ("f:3", 100.0), ("f:4", 50.0), ("f:5", 100.0)]
    assert batches[-1][1] == 95.0


def test_a_sparse_stream_advances_the_watermark_by_event_time_not_by_count():
    # 10 s apart, bound 30 s, chunks of up to 1000: the watermark must still move every ~30 s.
    records = [raw(10 * i, i) for i in range(12)]
    batches = list(replay_schedule(records, EventTimeOf("timestamp"), ReplayConfig(30, 1000)))
    assert [len(chunk) for chunk, _ in batches] == [4, 4, 4]
    assert [watermark for _, watermark in batches] == [0.0, 40.0, 80.0]


def test_event_time_of_accepts_dicts_and_iso_text():
    of = EventTimeOf("timestamp")
    assert of(RawRecord({"timestamp": "2024-01-01T00:00:00Z"}, "x")) == 1704067200.0
    assert of(RawRecord(b'{"timestamp": 1704067200000}', "x")) == 1704067200.0
    assert of(RawRecord(b'[1, 2]', "x")) is None
    assert of(RawRecord(b'{"timestamp": "2024-01-01T00:00:00"}', "x")) is None


@pytest.mark.parametrize("kwargs", [dict(max_out_of_orderness_seconds=-1), dict(chunk_size=0)])
def test_replay_config_validation(kwargs):
    with pytest.raises(ValueError):
        ReplayConfig(**kwargs)


def write_jsonl(path, times):
    path.write_text("".join(json.dumps({"timestamp": t}) + "\n" for t in times), encoding="utf-8")


def origin_and_timestamp(record, timestamp=beam.DoFn.TimestampParam):
    return record.origin.rsplit("/", 1)[-1], timestamp.micros / 1e6


def test_replay_files_yields_every_record_with_its_event_time(tmp_path, run_streaming):
    write_jsonl(tmp_path / "a.jsonl", [100, 160, 130])
    write_jsonl(tmp_path / "b.jsonl", [400, 390])
    (tmp_path / "c.jsonl").write_text('{"timestamp": "garbage"}\n', encoding="utf-8")

    def build(p):
        records = p | ReplayFiles(str(tmp_path / "*.jsonl"), EventTimeOf("timestamp"), ReplayConfig(30, 3))
        assert_that(records | beam.Map(origin_and_timestamp), equal_to([
            ("a.jsonl:1", 100.0), ("a.jsonl:2", 160.0), ("a.jsonl:3", 130.0),
            ("b.jsonl:1", 400.0), ("b.jsonl:2", 390.0),
            ("c.jsonl:1", 400.0),   # unreadable: stamped with the max seen
        ]))

    run_streaming(build)


def test_replay_files_when_a_chunk_does_not_advance_the_watermark(tmp_path, run_streaming):
    write_jsonl(tmp_path / "a.jsonl", [100, 200, 150, 120])   # 2nd chunk's watermark == 1st's

    def build(p):
        records = p | ReplayFiles(str(tmp_path / "a.jsonl"), EventTimeOf("timestamp"), ReplayConfig(60, 2))
        assert_that(records | beam.Map(origin_and_timestamp), equal_to([
            ("a.jsonl:1", 100.0), ("a.jsonl:2", 200.0), ("a.jsonl:3", 150.0), ("a.jsonl:4", 120.0)]))

    run_streaming(build)
