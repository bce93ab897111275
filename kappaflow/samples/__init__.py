"""Deterministic sample data for every pipeline."""

from typing import Iterable


def write_lines(path: str, lines: Iterable[str]) -> int:
    """Write one record per line; return how many."""
    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        for line in lines:
            handle.write(line + "\n")
            count += 1
    return count
