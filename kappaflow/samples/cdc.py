"""Deterministic CDC sample: a snapshot file (op r) and change files (c/u/d) of two source tables, as
Debezium would write them, with re-deliveries, out-of-order arrival and bad events.

    python -m kappaflow.samples.cdc --changes 20000 --out cdc-in
    → cdc-in/00-snapshot.jsonl, cdc-in/01-changes.jsonl, cdc-in/02-changes.jsonl

- `customers` (key customer_id) comes from a PostgreSQL connector: ordered by `source.lsn`.
  Part-way through, a new column `loyalty_points` appears in its images.
- `orders` (composite key store_id + order_id) comes from a MySQL connector: ordered by binlog
  `source.file` + `pos` + `row`; the binlog file rotates.
- Changes include deletes and re-creates of deleted keys. A share of lines arrives late (out of
  order), a share is delivered twice, a share uses the Kafka Connect `{schema, payload}` wrapper.
- Bad events: truncated JSON, no op, an op without its image, no key, an unknown table, and a
  type conflict (text where customers.loyalty_points holds integers).

`generate` also returns the final tables the log must produce: the generator's own model of the
source database, independent of the pipeline's code.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import random
from typing import Optional

PRIMARY_KEYS = "customers:customer_id,orders:store_id+order_id"
START_MS = int(dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.timezone.utc).timestamp() * 1000)
STATUSES = ("new", "paid", "shipped", "delivered", "returned")
TIERS = ("bronze", "silver", "gold")
FILES = ("00-snapshot.jsonl", "01-changes.jsonl", "02-changes.jsonl")


@dataclasses.dataclass(frozen=True)
class CdcSampleConfig:
    changes: int = 20_000
    seed: int = 7
    customers: int = 500  # rows in the snapshot, per table
    orders: int = 500
    changes_per_second: float = 20.0
    delete_share: float = 0.08
    duplicate_share: float = 0.02
    late_share: float = 0.05  # arrive up to `max_delay_seconds` after later changes
    max_delay_seconds: float = 30.0
    wrapped_share: float = 0.3
    bad_share: float = 0.005
    new_column_after: float = 0.4  # share of the log after which customers gain loyalty_points

    def __post_init__(self) -> None:
        if self.changes < 1 or self.customers < 1 or self.orders < 1:
            raise ValueError("a sample needs changes and rows")
        shares = (self.delete_share, self.duplicate_share, self.late_share, self.wrapped_share, self.bad_share)
        for share in shares:
            if not 0 <= share < 1:
                raise ValueError("shares must be in [0, 1)")


@dataclasses.dataclass(frozen=True)
class CdcSample:
    files: dict[str, list[str]]  # file name → JSON lines, in arrival order
    expected: dict[str, dict[tuple, dict]]  # table → key → final live row
    bad_events: int
    redeliveries: int


class _SourceDatabases:
    """The two source databases: current rows, and the position of the next change."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.rows: dict[str, dict[tuple, dict]] = {"customers": {}, "orders": {}}
        self.deleted: dict[str, list[tuple]] = {"customers": [], "orders": []}
        self.lsn = 24_000_000
        self.binlog = [1, 4]  # file number, position
        self.tx = 500

    def source(self, table: str, ts_ms: int, snapshot: bool, row: int = 0) -> dict:
        self.tx += 1
        if table == "customers":
            if not snapshot:
                self.lsn += self.rng.randrange(8, 400)
            return {"version": "2.7.3.Final", "connector": "postgresql", "name": "shop", "ts_ms": ts_ms,
                    "snapshot": "true" if snapshot else "false", "db": "shop", "schema": "public",
                    "table": table, "txId": self.tx, "lsn": self.lsn, "xmin": None}
        if not snapshot:
            self.binlog[1] += self.rng.randrange(60, 900)
            if self.binlog[1] > 50_000_000:  # rotate
                self.binlog = [self.binlog[0] + 1, 4]
        return {"version": "2.7.3.Final", "connector": "mysql", "name": "sales", "ts_ms": ts_ms,
                "snapshot": "true" if snapshot else "false", "db": "sales", "table": table, "server_id": 223344,
                "gtid": None, "file": f"mysql-bin.{self.binlog[0]:06d}", "pos": self.binlog[1], "row": row,
                "thread": 7, "query": None}


def _customer(rng: random.Random, key: int, loyalty: bool) -> dict:
    row = {"customer_id": key, "name": f"Customer {key} {rng.choice('ABCDEFGH')}",
           "email": f"c{key}.{rng.randrange(1000)}@example.com", "tier": rng.choice(TIERS),
           "active": rng.random() < 0.9}
    if loyalty:
        row["loyalty_points"] = rng.randrange(10_000)
    return row


def _order(rng: random.Random, key: tuple, customers: int) -> dict:
    store, order = key
    return {"store_id": store, "order_id": order, "customer_id": rng.randrange(customers),
            "status": rng.choice(STATUSES), "total": round(rng.uniform(1, 500), 2),
            "items": [{"sku": f"sku-{rng.randrange(300)}", "qty": rng.randrange(1, 4)}
                      for _ in range(rng.randrange(1, 3))]}


def _envelope(op: str, before: Optional[dict], after: Optional[dict], source: dict) -> dict:
    return {"before": before, "after": after, "source": source, "op": op, "ts_ms": source["ts_ms"] + 40}


def _text(rng: random.Random, envelope: dict, config: CdcSampleConfig) -> str:
    if rng.random() < config.wrapped_share:
        name = f"{envelope['source']['name']}.{envelope['source']['table']}.Envelope"
        return json.dumps({"schema": {"type": "struct", "optional": False, "name": name}, "payload": envelope})
    return json.dumps(envelope)


def _bad(rng: random.Random, db: _SourceDatabases, ts_ms: int) -> str:
    key = rng.randrange(10**6, 2 * 10**6)
    good = _envelope("u", None, {"customer_id": key, "name": "x"}, db.source("customers", ts_ms, False))
    kind = rng.randrange(6)
    if kind == 0:
        return json.dumps(good)[: rng.randrange(10, 80)]
    if kind == 1:
        del good["op"]
    elif kind == 2:
        good["after"] = None
    elif kind == 3:
        del good["after"]["customer_id"]
    elif kind == 4:
        good["source"]["table"] = "audit_log"
    else:  # a type conflict, found when applied: `active` holds booleans
        good["after"]["active"] = "maybe"
    return json.dumps(good)


def _next_change(rng: random.Random, db: _SourceDatabases, config: CdcSampleConfig, ts_ms: int,
                 loyalty: bool) -> dict:
    table = "customers" if rng.random() < 0.5 else "orders"
    rows, deleted = db.rows[table], db.deleted[table]
    roll = rng.random()
    if deleted and roll < 0.05:  # re-create a deleted key
        key = deleted.pop(rng.randrange(len(deleted)))
        op = "c"
    elif roll < 0.15 or not rows:
        if table == "customers":  # a new id: creates, and only they, raise rows + deleted
            key: tuple = (len(rows) + len(deleted) + 10**5,)
        else:
            key = (rng.randrange(1, 4), f"o{rng.randrange(10**8):08d}")
        op = "c" if key not in rows else "u"
        if key in deleted:
            deleted.remove(key)
    else:
        key = rng.choice(list(rows))
        op = "d" if rng.random() < config.delete_share else "u"
    source = db.source(table, ts_ms, False)
    before = rows.get(key)
    if op == "d":
        del rows[key]
        deleted.append(key)
        return _envelope("d", before, None, source)
    after = _customer(rng, key[0], loyalty) if table == "customers" else _order(rng, key, config.customers)
    rows[key] = after
    return _envelope(op, before, after, source)


def generate(config: CdcSampleConfig) -> CdcSample:
    rng = random.Random(config.seed)
    db = _SourceDatabases(rng)
    snapshot: list[str] = []
    for i in range(config.customers):
        row = _customer(rng, i, False)
        db.rows["customers"][(i,)] = row
        snapshot.append(_text(rng, _envelope("r", None, row, db.source("customers", START_MS, True)), config))
    for i in range(config.orders):
        key = (i % 3 + 1, f"o{i:08d}")
        row = _order(rng, key, config.customers)
        db.rows["orders"][key] = row
        snapshot.append(_text(rng, _envelope("r", None, row, db.source("orders", START_MS, True, i)), config))

    arrivals: list[tuple[float, int, str]] = []
    bad = redeliveries = 0
    for index in range(config.changes):
        ts_ms = START_MS + 60_000 + int(index * 1000 / config.changes_per_second)
        arrival = ts_ms / 1000
        if rng.random() < config.late_share:
            arrival += rng.uniform(1, config.max_delay_seconds)
        if index > 1000 and rng.random() < config.bad_share:
            arrivals.append((arrival, index, _bad(rng, db, ts_ms)))
            bad += 1
            continue
        loyalty = index >= config.new_column_after * config.changes
        text = _text(rng, _next_change(rng, db, config, ts_ms, loyalty), config)
        arrivals.append((arrival, index, text))
        if rng.random() < config.duplicate_share:
            arrivals.append((arrival + rng.uniform(0.1, config.max_delay_seconds), index, text))
            redeliveries += 1
    arrivals.sort()
    half = len(arrivals) // 2
    lines = [text for _, _, text in arrivals]
    return CdcSample(
        files={FILES[0]: snapshot, FILES[1]: lines[:half], FILES[2]: lines[half:]},
        expected={table: {k: dict(v) for k, v in rows.items()} for table, rows in db.rows.items()},
        bad_events=bad,
        redeliveries=redeliveries,
    )


def write_sample(directory: str, config: CdcSampleConfig) -> CdcSample:
    os.makedirs(directory, exist_ok=True)
    sample = generate(config)
    for name, lines in sample.files.items():
        with open(os.path.join(directory, name), "w", encoding="utf-8") as handle:
            handle.writelines(line + "\n" for line in lines)
    return sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", required=True, help="directory to write the files to")
    args = parser.parse_args()
    sample = write_sample(args.out, CdcSampleConfig(changes=args.changes, seed=args.seed))
    total = sum(len(lines) for lines in sample.files.values())
    print(f"wrote {total:,} events to {args.out}/ ({', '.join(sample.files)}): {sample.redeliveries:,} "
          f"re-deliveries, {sample.bad_events:,} bad events; --primary_keys={PRIMARY_KEYS}")


if __name__ == "__main__":
    main()
