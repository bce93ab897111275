"""Plain-Python, single-process baseline computing the target tables of a CDC batch run: read the
files, parse each event (the same parsing function), keep the newest change per row in a dict,
then write only those rows. The yardstick for the Beam pipeline.

    python benchmarks/baseline_cdc.py 'INPUT_GLOB' OUTPUT_URL PRIMARY_KEYS
"""

from __future__ import annotations

import sys
from collections import defaultdict

from io_connectors.cdc_sink import apply_changes
from io_connectors.change_tables import ChangeTables
from io_connectors.files import expand_pattern
from kappaflow.core.schemas.cdc import DEBEZIUM_CHANGE_EVENT
from kappaflow.core.sql import create_engine
from transforms.debezium import PrimaryKeys, to_change, unwrap


def main(pattern: str, output_url: str, primary_keys: str) -> int:
    keys = PrimaryKeys.parse(primary_keys)
    newest: dict[tuple, dict] = {}
    read = 0
    for path in expand_pattern(pattern):
        with open(path, "rb") as handle:
            for line in handle:
                read += 1
                try:
                    change = to_change(DEBEZIUM_CHANGE_EVENT.parse(unwrap(line)), keys)
                except ValueError:
                    continue
                row = (change["table"], change["key"])
                held = newest.get(row)
                if held is None or change["version"] > held["version"]:
                    newest[row] = change
    by_table: dict[str, list[dict]] = defaultdict(list)
    for change in newest.values():
        by_table[change["table"]].append(change)
    engine = create_engine(output_url)
    tables = ChangeTables(engine, keys)
    for table, changes in by_table.items():
        for i in range(0, len(changes), 500):
            apply_changes(engine, tables, table, changes[i:i + 500])
    return read


if __name__ == "__main__":
    print(main(*sys.argv[1:4]))
