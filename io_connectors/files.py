"""Record readers for JSONL, CSV, Avro and Parquet files (optionally gzip-compressed), by extension.

Paths go through Beam's FileSystems, so local paths, gs:// and any registered filesystem work.
"""

from __future__ import annotations

import csv
import gzip
import io
from typing import Generator, Iterable, Iterator, Optional

from apache_beam.io.filesystems import FileSystems

from kappaflow.core.records import RawRecord
from kappaflow.core.schema import parse_timestamp

__all__ = ["expand_pattern", "read_all", "read_records", "file_format", "open_positioned", "position_kind"]

FORMATS = ("jsonl", "csv", "avro", "parquet")


def file_format(path: str) -> str:
    name = path.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for suffix, fmt in ((".jsonl", "jsonl"), (".json", "jsonl"), (".ndjson", "jsonl"), (".csv", "csv"),
                        (".avro", "avro"), (".parquet", "parquet"), (".pq", "parquet")):
        if name.endswith(suffix):
            return fmt
    raise ValueError(f"cannot tell the format of {path!r}: use .jsonl, .csv, .avro or .parquet (+ .gz)")


def expand_pattern(pattern: str) -> list[str]:
    """Comma-separated globs → sorted list of files; an empty match is an error, not an empty run."""
    paths: list[str] = []
    for part in filter(None, (p.strip() for p in pattern.split(","))):
        matched = [m.path for result in FileSystems.match([part]) for m in result.metadata_list]
        if not matched:
            raise FileNotFoundError(f"no input file matches {part!r}")
        paths.extend(sorted(matched))
    for path in paths:
        file_format(path)  # fail at construction, not on a worker
    return paths


# Reads refill a 1 MiB buffer: each refill releases the GIL, and in a worker whose gRPC threads want
# it too, getting it back can take a switch interval (5 ms). With the default 8 KiB buffer that was
# most of a replay's read time.
_READ_BUFFER = 1 << 20


def _open_binary(path: str) -> io.BufferedIOBase:
    raw = io.BufferedReader(FileSystems.open(path, compression_type="uncompressed"), _READ_BUFFER)
    return gzip.GzipFile(fileobj=raw) if path.lower().endswith(".gz") else raw


def read_records(path: str, ingest_time_field: Optional[str] = None) -> Iterator[RawRecord]:
    """Every record of one file, in file order, with its origin (`path:line` or `path#row`).

    With `ingest_time_field`, that top-level field says when the record was ingested (not what the
    device said): it is taken out of the payload into `RawRecord.ingest_time`.
    """
    records = _read_records(path)
    if ingest_time_field is None:
        return records
    return (lift_ingest_time(record, ingest_time_field) for record in records)


def read_all(paths: Iterable[str], ingest_time_field: Optional[str] = None) -> Iterator[RawRecord]:
    """The files as one log, in the given order."""
    for path in paths:
        yield from read_records(path, ingest_time_field)


def lift_ingest_time(record: RawRecord, field: str) -> RawRecord:
    """Move `field` from the payload to `ingest_time`. A payload that is not a JSON object is left
    for the parser to reject; a missing or unreadable field means: ingest time unknown."""
    from transforms.parse import decode_record

    try:  # the parser's decoding: what it rejects (too large, too deep, not JSON) stays as it was
        payload = decode_record(record.payload)
    except ValueError:
        return record
    if not isinstance(payload, dict):
        return record
    payload = dict(payload)
    value = payload.pop(field, None)
    try:
        ingest_time = None if value in (None, "") else parse_timestamp(value)
    except ValueError:
        ingest_time = None
    return RawRecord(payload, record.origin, ingest_time)


def _read_records(path: str) -> Iterator[RawRecord]:
    fmt = file_format(path)
    with _open_binary(path) as handle:
        if fmt == "jsonl":
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield RawRecord(line.rstrip(b"\r\n"), f"{path}:{number}")
        elif fmt == "csv":
            yield from _csv_records(handle, path)
        elif fmt == "avro":
            import fastavro

            for number, row in enumerate(fastavro.reader(handle), start=1):
                yield RawRecord(row, f"{path}#{number}")
        else:
            import pyarrow.parquet as pq

            number = 0
            for batch in pq.ParquetFile(handle).iter_batches():
                for row in batch.to_pylist():
                    number += 1
                    yield RawRecord(row, f"{path}#{number}")


def _csv_records(handle, path: str) -> Iterator[RawRecord]:
    """Rows as nested dicts. Bytes that are not UTF-8 become lone surrogates, which the parser
    rejects naming the field; a cell of any size reaches the parser's size limit; a row the csv
    module cannot read (a NUL byte, say) becomes a record the parser rejects with that error."""
    csv.field_size_limit(2**31 - 1)
    text = io.TextIOWrapper(handle, encoding="utf-8", errors="surrogateescape", newline="")
    reader = csv.reader(text)
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        return
    number = 1
    while True:
        number += 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            yield RawRecord(f"unreadable CSV row: {err}".encode("utf-8"), f"{path}:{number}")
            continue
        if row:
            yield RawRecord(_nest(dict(zip(header, row))), f"{path}:{number}")


def position_kind(path: str) -> str:
    """How a replay names a place in a file: `byte` offsets (plain JSONL), `row` numbers (Parquet,
    whose footer says where each row group starts), or `record` numbers (CSV, whose quoted fields
    may span lines; Avro; anything gzipped): those are read in order from the start."""
    if path.lower().endswith(".gz"):
        return "record"
    return {"jsonl": "byte", "parquet": "row"}.get(file_format(path), "record")


def open_positioned(
    path: str, start: int, ingest_time_field: Optional[str] = None
) -> Generator[tuple[int, RawRecord], None, None]:
    """(position, record) for every record of `path` at or after position `start` (see
    position_kind), in file order, with the same origins as read_records. A byte position is where
    a line starts: `start` may fall inside a line, and the first record is the next line."""
    kind = position_kind(path)
    if kind == "byte":
        records = _jsonl_from(path, start)
    elif kind == "row":
        records = _parquet_rows_from(path, start)
    else:
        records = ((index, record) for index, record in enumerate(_read_records(path)) if index >= start)
    if ingest_time_field is not None:
        records = ((pos, lift_ingest_time(record, ingest_time_field)) for pos, record in records)
    return records


def _jsonl_from(path: str, start: int) -> Iterator[tuple[int, RawRecord]]:
    with _open_binary(path) as handle:
        offset, number = 0, 1
        if start > 0:
            # Origins name line numbers, as in batch: count the newlines before `start` (a bulk
            # count, no parsing; a resume on the worker that read the prefix skips this).
            number = 1 + _count_newlines(handle, start - 1)
            partial = handle.readline()  # the rest of the line holding byte start-1
            offset = start - 1 + len(partial)
            number += 1 if partial.endswith(b"\n") else 0
        for line in handle:
            if line.strip():
                yield offset, RawRecord(line.rstrip(b"\r\n"), f"{path}:{number}")
            offset += len(line)
            number += 1


def _count_newlines(handle, stop: int, block: int = 1 << 20) -> int:
    count, left = 0, stop
    handle.seek(0)
    while left > 0:
        data = handle.read(min(block, left))
        if not data:
            break
        count += data.count(b"\n")
        left -= len(data)
    return count


def _parquet_rows_from(path: str, start: int) -> Iterator[tuple[int, RawRecord]]:
    import pyarrow.parquet as pq

    with _open_binary(path) as handle:
        parquet = pq.ParquetFile(handle)
        first = 0
        for group in range(parquet.num_row_groups):
            rows = parquet.metadata.row_group(group).num_rows
            if first + rows > start:  # earlier groups are skipped from the footer alone
                for offset, row in enumerate(parquet.read_row_group(group).to_pylist()):
                    if first + offset >= start:
                        yield first + offset, RawRecord(row, f"{path}#{first + offset + 1}")
            first += rows


def _nest(row: dict) -> dict:
    """CSV columns named `a.b` become nested objects, so one schema serves CSV and JSON alike."""
    out: dict = {}
    for column, value in row.items():
        node = out
        *parents, leaf = column.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return out
