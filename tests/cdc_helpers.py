"""Small builders of Debezium events for the CDC tests."""

from __future__ import annotations

import json
import os
from typing import Any, Optional

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "debezium")


def fixture(name: str) -> dict:
    with open(os.path.join(FIXTURES, f"{name}.json"), encoding="utf-8") as handle:
        return json.load(handle)


def event(op: str, after: Optional[dict] = None, before: Optional[dict] = None, *, table: str = "customers",
          lsn: Optional[int] = None, ts_ms: int = 1_767_600_000_000, wrapped: bool = False, **source: Any) -> dict:
    """A Debezium envelope (PostgreSQL-like when `lsn` is given)."""
    src = {"connector": "postgresql", "db": "shop", "table": table, "ts_ms": ts_ms, **source}
    if lsn is not None:
        src["lsn"] = lsn
    envelope = {"before": before, "after": after, "source": src, "op": op, "ts_ms": ts_ms + 5}
    return {"schema": {}, "payload": envelope} if wrapped else envelope


def line(envelope: dict) -> bytes:
    return json.dumps(envelope).encode("utf-8")
