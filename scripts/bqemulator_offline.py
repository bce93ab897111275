"""Start bqemulator without network access: its start-up downloads DuckDB's spatial extension,
which only GEOGRAPHY needs (unsupported here). Run with the emulator's own interpreter:

    .cache/bqemulator/bin/python scripts/bqemulator_offline.py start --rest-port N ...
"""

import logging
import sys

from bqemulator import cli
from bqemulator.storage import engine


def _skip_spatial(self) -> None:
    logging.getLogger("bqemulator").warning("DuckDB spatial extension not loaded: GEOGRAPHY is unsupported")


engine.DuckDBEngine._load_spatial = _skip_spatial

if __name__ == "__main__":
    sys.exit(cli.main())
