"""Deterministic sample data for every pipeline."""

import argparse
import dataclasses
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


@dataclasses.dataclass(frozen=True)
class SampleCommand:
    """The command line of a JSONL sample generator, `python -m kappaflow.samples.NAME`: --COUNT
    records (`config`'s field `count`, with --seed and both defaults taken from `config`) made by
    `generate` to --out, and with --reference_db the reference tables they join (`reference` names
    them), built by `build_reference_db`."""

    doc: str
    config: Callable[..., Any]  # a frozen dataclass with fields `count` and `seed`
    count: str
    generate: Callable[[Any], Iterable[str]]
    build_reference_db: Callable[[str, Any], None]
    reference: str

    def write(self, path: str, config: Any) -> int:
        """Write the sample `config` describes to `path`; return its number of lines."""
        return write_lines(path, self.generate(config))

    def main(self, argv: Optional[Sequence[str]] = None) -> None:
        defaults = self.config()
        parser = argparse.ArgumentParser(description=self.doc, formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument(f"--{self.count}", type=int, default=getattr(defaults, self.count))
        parser.add_argument("--seed", type=int, default=defaults.seed)
        parser.add_argument("--out", required=True, help="JSONL file to write")
        parser.add_argument("--reference_db", help="SQLAlchemy URL of the reference database to (re)build")
        args = parser.parse_args(argv)
        count = getattr(args, self.count)
        made = self.config(**{self.count: count, "seed": args.seed})
        lines = self.write(args.out, made)
        print(f"wrote {lines:,} lines ({count:,} {self.count}) to {args.out}")
        if args.reference_db:
            self.build_reference_db(args.reference_db, made)
            print(f"built {self.reference} in {args.reference_db}")
