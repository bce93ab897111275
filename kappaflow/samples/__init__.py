"""Deterministic sample data for every pipeline."""

import argparse
import random
from typing import Any, Callable, Iterable, Optional, Sequence


def write_lines(path: str, lines: Iterable[str]) -> int:
    """Write one record per line; return how many."""
    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        for line in lines:
            handle.write(line + "\n")
            count += 1
    return count


class Arrivals:
    """Sample lines in the order they arrive. A share of them (`duplicate_share`) is delivered a
    second time, up to `redelivery_seconds` after the first copy."""

    def __init__(self, rng: random.Random, duplicate_share: float, redelivery_seconds: float) -> None:
        self._rng = rng
        self._duplicate_share = duplicate_share
        self._redelivery_seconds = redelivery_seconds
        self._arrivals: list[tuple[float, int, str]] = []

    def add(self, arrival: float, index: int, line: str) -> None:
        self._arrivals.append((arrival, index, line))
        if self._rng.random() < self._duplicate_share:
            self._arrivals.append((arrival + self._rng.uniform(0.1, self._redelivery_seconds), index, line))

    def in_order(self) -> list[str]:
        return [line for _, _, line in sorted(self._arrivals)]


def sample_main(doc: str, unit: str, default_count: int, default_seed: int, config: Callable[[int, int], Any],
                write_sample: Callable[[str, Any], int], build_reference_db: Callable[[str, Any], None],
                reference: str, argv: Optional[Sequence[str]] = None) -> None:
    """The command line of a JSONL sample generator: --UNIT records (`config(count, seed)`) to
    --out, and with --reference_db the reference tables (`reference` names them) they join."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(f"--{unit}", type=int, default=default_count)
    parser.add_argument("--seed", type=int, default=default_seed)
    parser.add_argument("--out", required=True, help="JSONL file to write")
    parser.add_argument("--reference_db", help="SQLAlchemy URL of the reference database to (re)build")
    args = parser.parse_args(argv)
    count = getattr(args, unit)
    made = config(count, args.seed)
    lines = write_sample(args.out, made)
    print(f"wrote {lines:,} lines ({count:,} {unit}) to {args.out}")
    if args.reference_db:
        build_reference_db(args.reference_db, made)
        print(f"built {reference} in {args.reference_db}")
