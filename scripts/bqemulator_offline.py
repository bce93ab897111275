"""Start bqemulator without network access: its start-up downloads DuckDB's spatial extension,
which only GEOGRAPHY needs (unsupported here). And flush BUFFERED write streams as BigQuery does.
Run with the emulator's own interpreter:

    .cache/bqemulator/bin/python scripts/bqemulator_offline.py start --rest-port N ...
"""

import dataclasses
import logging
import sys

from bqemulator import cli
from bqemulator.storage import engine
from bqemulator.streaming.strategies import buffered


def _skip_spatial(self) -> None:
    logging.getLogger("bqemulator").warning("DuckDB spatial extension not loaded: GEOGRAPHY is unsupported")


engine.DuckDBEngine._load_spatial = _skip_spatial

_flush_before = buffered.BufferedWriteStrategy.flush


def _flush_including_offset(self, stream, offset: int):
    # FlushRowsRequest.offset: "Rows before this offset (including this offset) will be flushed"
    # (google.cloud.bigquery.storage.v1). bqemulator 1.4.0 flushes the rows before it only, so the
    # last row appended stayed invisible, and Beam's streaming Storage Write (which flushes to the
    # offset of its last appended row) got OUT_OF_RANGE "Offset 0 already flushed" on its first
    # flush and failed the bundle for ever.
    outcome = _flush_before(self, stream, offset + 1)
    return dataclasses.replace(outcome, offset=offset) if outcome.ok else outcome


buffered.BufferedWriteStrategy.flush = _flush_including_offset

if __name__ == "__main__":
    sys.exit(cli.main())
