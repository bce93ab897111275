"""File readers: JSONL (+gz), CSV with dotted columns, Avro, Parquet; origins; patterns."""

from __future__ import annotations

import gzip
import json

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from io_connectors.files import expand_pattern, file_format, read_records

ROWS = [{"id": "a", "n": 1}, {"id": "b", "n": 2}, {"id": "c", "n": 3}]


def test_jsonl_keeps_raw_bytes_and_line_origins(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"id": "a", "n": 1}\r\n\n{"id": "b", "n": 2}\n   \n{"id": "c", "n": 3}')
    records = list(read_records(str(path)))
    assert [r.payload for r in records] == [b'{"id": "a", "n": 1}', b'{"id": "b", "n": 2}', b'{"id": "c", "n": 3}']
    assert [r.origin for r in records] == [f"{path}:1", f"{path}:3", f"{path}:5"]  # blank lines skipped
    assert all(r.ingest_time is None for r in records)


def test_jsonl_gz(tmp_path):
    path = tmp_path / "events.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in ROWS)
    records = list(read_records(str(path)))
    assert [json.loads(r.payload) for r in records] == ROWS
    assert [r.origin for r in records] == [f"{path}:{i}" for i in (1, 2, 3)]


def test_csv_dotted_columns_become_nested(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("event_id,properties.price,properties.product_id,context.geo.country\n"
                    "e1,9.5,p1,DE\n"
                    'e2,,"p,2",FR\n', encoding="utf-8")
    records = list(read_records(str(path)))
    assert [r.payload for r in records] == [
        {"event_id": "e1", "properties": {"price": "9.5", "product_id": "p1"}, "context": {"geo": {"country": "DE"}}},
        {"event_id": "e2", "properties": {"price": "", "product_id": "p,2"}, "context": {"geo": {"country": "FR"}}},
    ]
    assert [r.origin for r in records] == [f"{path}:2", f"{path}:3"]  # line 1 is the header


def test_avro(tmp_path):
    path = tmp_path / "events.avro"
    schema = fastavro.parse_schema({"type": "record", "name": "r", "fields": [
        {"name": "id", "type": "string"}, {"name": "n", "type": "long"}]})
    with open(path, "wb") as handle:
        fastavro.writer(handle, schema, ROWS)
    records = list(read_records(str(path)))
    assert [r.payload for r in records] == ROWS
    assert [r.origin for r in records] == [f"{path}#{i}" for i in (1, 2, 3)]


def test_parquet_across_row_groups(tmp_path):
    path = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path, row_group_size=2)
    assert pq.ParquetFile(path).num_row_groups == 2
    records = list(read_records(str(path)))
    assert [r.payload for r in records] == ROWS
    assert [r.origin for r in records] == [f"{path}#{i}" for i in (1, 2, 3)]


@pytest.mark.parametrize("path, fmt", [
    ("a.jsonl", "jsonl"), ("a.json", "jsonl"), ("A.NDJSON", "jsonl"), ("a.jsonl.gz", "jsonl"),
    ("a.csv", "csv"), ("a.csv.gz", "csv"), ("a.avro", "avro"), ("a.parquet", "parquet"),
    ("gs://bucket/x/a.pq", "parquet"),
])
def test_file_format(path, fmt):
    assert file_format(path) == fmt


@pytest.mark.parametrize("path", ["a.txt", "a.gz", "a", "a.jsonl.zip", "csv"])
def test_file_format_rejects_unknown_extensions(path):
    with pytest.raises(ValueError, match="cannot tell the format"):
        file_format(path)


def test_expand_pattern(tmp_path):
    for name in ("b.jsonl", "a.jsonl", "c.csv"):
        (tmp_path / name).write_text("", encoding="utf-8")
    assert expand_pattern(str(tmp_path / "*.jsonl")) == [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
    assert expand_pattern(f"{tmp_path / 'c.csv'}, {tmp_path / '*.jsonl'}") == [
        str(tmp_path / "c.csv"), str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]


def test_expand_pattern_raises_on_no_match(tmp_path):
    (tmp_path / "a.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="no input file matches"):
        expand_pattern(str(tmp_path / "*.csv"))
    with pytest.raises(FileNotFoundError):
        expand_pattern(f"{tmp_path / 'a.jsonl'},{tmp_path / 'missing.jsonl'}")


def test_expand_pattern_rejects_unknown_formats_at_construction(tmp_path):
    (tmp_path / "notes.txt").write_text("x", encoding="utf-8")
    with pytest.raises(ValueError, match="cannot tell the format"):
        expand_pattern(str(tmp_path / "*"))


def test_ingest_time_field_is_lifted_out_of_the_payload(tmp_path):
    jsonl = tmp_path / "readings.jsonl"
    jsonl.write_text('{"id": "a", "ingest_time": 1772431200000}\n'
                     '{"id": "b", "ingest_time": "2026-03-02T06:00:10Z"}\n'
                     '{"id": "c"}\n'
                     '{"id": "d", "ingest_time": "soon"}\n'
                     '{broken\n', encoding="utf-8")
    records = list(read_records(str(jsonl), ingest_time_field="ingest_time"))
    assert [r.ingest_time for r in records] == [1772431200.0, 1772431210.0, None, None, None]
    assert [r.payload for r in records[:4]] == [{"id": "a"}, {"id": "b"}, {"id": "c"}, {"id": "d"}]
    assert records[4].payload == b"{broken"  # left for the parser to reject
    assert [r.origin for r in records] == [f"{jsonl}:{i}" for i in range(1, 6)]

    csv_path = tmp_path / "readings.csv"
    csv_path.write_text("id,ingest_time,location.zone\na,1772431200000,z1\n", encoding="utf-8")
    (record,) = read_records(str(csv_path), ingest_time_field="ingest_time")
    assert record.payload == {"id": "a", "location": {"zone": "z1"}} and record.ingest_time == 1772431200.0
    # Without the option the field is just data.
    assert list(read_records(str(csv_path)))[0].ingest_time is None


def test_positioned_reads_resume_anywhere_with_the_same_records(tmp_path):
    # What a replay resumes from after a checkpoint: every byte offset of a JSONL file (mid-line
    # included) and every row of a Parquet file with several row groups.
    import pyarrow as pa
    import pyarrow.parquet as pq

    from io_connectors.files import open_positioned

    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("".join(json.dumps({"n": i}) + "\n" + ("\n" if i == 4 else "") for i in range(12)))
    everything = list(open_positioned(str(jsonl), 0))
    assert [r for _, r in everything] == list(read_records(str(jsonl)))
    for start in range(jsonl.stat().st_size + 1):
        assert list(open_positioned(str(jsonl), start)) == [(o, r) for o, r in everything if o >= start]

    parquet = tmp_path / "a.parquet"
    pq.write_table(pa.table({"n": list(range(25))}), parquet, row_group_size=7)
    rows = list(read_records(str(parquet)))
    for start in range(27):
        assert [r for _, r in open_positioned(str(parquet), start)] == rows[start:]


def test_hostile_csv_rows_become_records_for_the_parser_to_reject(tmp_path):
    path = tmp_path / "hostile.csv"
    big = "x" * 300_000  # over the csv module's default field limit
    path.write_bytes(b"id,name\n1,ok\n2," + big.encode() + b"\n3,caf\xe9\n4,a\x00b\n5,fine\n")
    records = list(read_records(str(path)))
    assert [r.origin.rsplit(":", 1)[-1] for r in records] == ["2", "3", "4", "5", "6"]  # line 1: header
    by_id = {r.payload["id"]: r.payload["name"] for r in records}
    assert by_id["2"] == big
    assert by_id["3"] == "caf\udce9"  # not UTF-8: a lone surrogate the parser rejects
    assert by_id["5"] == "fine"


def test_a_bounded_read_stamps_every_record_with_a_bounded_sources_watermark(tmp_path):
    # The late-data router judges such records by it, with no state and no timers: in batch
    # nothing is late, and nothing arms a timer.
    from io_connectors.sources import read_bounded
    from kappaflow.core.records import BOUNDED_WATERMARK

    path = tmp_path / "a.jsonl"
    path.write_text('{"timestamp": 1}\nnot json\n', encoding="utf-8")
    assert [r.watermark for r in read_bounded(str(path))] == [BOUNDED_WATERMARK, BOUNDED_WATERMARK]
