"""Enrich events from reference tables in a relational database (any SQLAlchemy URL).

A reference table of at most `WHOLE_TABLE_ROWS` rows is read whole on the first lookup and again
when the cache's TTL expires: reference tables are usually small, and a worker then asks the
database once per TTL instead of once per bundle for the keys it has not seen yet. A larger table
(or a TTL of 0) is looked up per bundle (`WHERE key IN (...)` with bound parameters). Either way
results are cached in the worker with the TTL, and a missing key takes the defaults. When the
database is unreachable the lookup is retried with exponential backoff; after the last attempt the
batch goes to the dead letters, so a database outage never becomes a crash loop.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Iterator, Mapping, Optional, Sequence

import apache_beam as beam
import sqlalchemy as sa
from apache_beam.metrics import Metrics
from apache_beam.utils.windowed_value import WindowedValue

from kappaflow.core import metrics
from kappaflow.core.records import DEAD_LETTER_TAG, Rejection
from kappaflow.core.retry import RetryPolicy, brief_error
from kappaflow.core.sql import create_engine

__all__ = ["LookupSpec", "EnrichFromDatabase", "LookupReferenceFn"]


@dataclasses.dataclass(frozen=True)
class LookupSpec:
    """Join `table` on `key_column` = event[`event_field`]; copy `columns` (column → event field),
    or `defaults` (event field → value) when the key is missing or null.

    With `keep_existing`, the event's own value of a field wins over the default wherever the
    reference row is missing or NULL (e.g. a location the message carries itself).
    """

    table: str
    key_column: str
    event_field: str
    columns: Mapping[str, str]
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    keep_existing: bool = False

    def __post_init__(self) -> None:
        if not self.columns:
            raise ValueError(f"lookup on {self.table}: no columns to copy")
        unknown = set(self.defaults) - set(self.columns.values())
        if unknown:
            raise ValueError(f"lookup on {self.table}: defaults for unknown fields {sorted(unknown)}")

    def apply(self, event: dict, row: Optional[Mapping[str, Any]]) -> None:
        for column, field in self.columns.items():
            if not self.keep_existing:
                event[field] = row[column] if row is not None else self.defaults.get(field)
                continue
            value = row[column] if row is not None else None
            if value is None:
                value = event.get(field)
            event[field] = self.defaults.get(field) if value is None else value


WHOLE_TABLE_ROWS = 100_000  # tables up to this many rows are read whole
_CACHED_KEYS = 100_000  # per lookup, when looked up per key


class _TtlCache:
    def __init__(self, ttl_seconds: float, max_entries: int) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: dict[Any, tuple[float, Any]] = {}
        self._whole_until = float("-inf")  # until then it holds the whole table: absent means missing

    def get(self, key: Any, now: float) -> tuple[bool, Any]:
        hit = self._entries.get(key)
        if hit is not None and hit[0] >= now:
            return True, hit[1]
        if now <= self._whole_until:
            return True, None
        return False, None

    def fill(self, rows: dict[Any, Any], now: float) -> None:
        """The whole table: every key, fresh for the TTL."""
        self._entries = {key: (now + self._ttl, row) for key, row in rows.items()}
        self._whole_until = now + self._ttl

    def put(self, key: Any, value: Any, now: float) -> None:
        if len(self._entries) >= self._max:
            self._entries.clear()  # crude but bounded; reference tables are small in practice
        self._entries[key] = (now + self._ttl, value)


class LookupReferenceFn(beam.DoFn):
    def __init__(
        self,
        url: str,
        lookups: Sequence[LookupSpec],
        batch_size: int,
        cache_ttl_seconds: float,
        retry: RetryPolicy,
    ) -> None:
        self._url = url
        self._lookups = tuple(lookups)
        self._batch_size = batch_size
        self._ttl = cache_ttl_seconds
        self._retry = retry
        self._missing = Metrics.counter(metrics.NAMESPACE, "lookup_key_missing")
        self._failed = Metrics.counter(metrics.NAMESPACE, metrics.ENRICH_FAILED)
        self._queries = Metrics.counter(metrics.NAMESPACE, "lookup_queries")

    def setup(self) -> None:
        self._engine = create_engine(self._url)
        self._caches = [_TtlCache(self._ttl, _CACHED_KEYS) for _ in self._lookups]
        # Per lookup: may it be read whole? A TTL of 0 asks for fresh rows on every lookup.
        self._whole = [self._ttl > 0 for _ in self._lookups]
        self._tables = [
            sa.table(spec.table, sa.column(spec.key_column), *(sa.column(c) for c in spec.columns))
            for spec in self._lookups
        ]

    def teardown(self) -> None:
        self._engine.dispose()

    def start_bundle(self) -> None:
        self._buffer: list[WindowedValue] = []

    def process(self, event: dict, windowed=beam.DoFn.WindowedValueParam) -> Iterator[Any]:
        self._buffer.append(windowed)
        if len(self._buffer) >= self._batch_size:
            yield from self._flush()

    def finish_bundle(self) -> Iterator[Any]:
        yield from self._flush()

    def _flush(self) -> Iterator[Any]:
        batch, self._buffer = self._buffer, []
        if not batch:
            return
        try:
            events = [wv.value for wv in batch]
            rows = self._retry.call("reference lookup", lambda: [
                self._fetch(i, spec, events) for i, spec in enumerate(self._lookups)], retry_on=sa.exc.SQLAlchemyError)
        except sa.exc.SQLAlchemyError as err:
            self._failed.inc(len(batch))
            reason = f"reference database unavailable after {self._retry.attempts} attempts: {brief_error(err)}"
            for wv in batch:
                yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, wv.with_value(Rejection(
                    "enrich", reason, wv.value, event_time=wv.timestamp.micros / 1e6)))
            return
        for wv in batch:
            event = dict(wv.value)  # inputs are immutable in Beam
            for spec, found in zip(self._lookups, rows):
                key = event.get(spec.event_field)
                row = found.get(key)
                if row is None:
                    self._missing.inc()
                spec.apply(event, row)
            yield wv.with_value(event)

    def _fetch(self, index: int, spec: LookupSpec, events: list[dict]) -> dict:
        """key → row (or None) for every key of the batch, from the cache or one query."""
        now = time.monotonic()
        cache = self._caches[index]
        result: dict = {}
        wanted = set()
        for event in events:
            key = event.get(spec.event_field)
            if key is None or key in result:
                continue
            hit, row = cache.get(key, now)
            if hit:
                result[key] = row
            else:
                wanted.add(key)
        if not wanted:
            return result
        table = self._tables[index]
        key_col = table.c[spec.key_column]
        query = sa.select(key_col, *(table.c[c] for c in spec.columns))
        if self._whole[index]:
            with self._engine.connect() as conn:
                rows = conn.execute(query.limit(WHOLE_TABLE_ROWS + 1)).fetchall()
            self._queries.inc()
            if len(rows) <= WHOLE_TABLE_ROWS:
                found = {r[0]: dict(r._mapping) for r in rows}
                cache.fill(found, now)
                result.update((key, found.get(key)) for key in wanted)
                return result
            self._whole[index] = False  # too large to hold: per-key lookups from now on
        with self._engine.connect() as conn:
            found = {r[0]: dict(r._mapping) for r in conn.execute(
                query.where(key_col.in_(sa.bindparam("keys", expanding=True))), {"keys": list(wanted)})}
        self._queries.inc()
        for key in wanted:
            row = found.get(key)
            cache.put(key, row, now)
            result[key] = row
        return result


class EnrichFromDatabase(beam.PTransform):
    """Events → (enriched events, dead letters for events whose lookup failed)."""

    def __init__(
        self,
        url: str,
        lookups: Sequence[LookupSpec],
        batch_size: int = 500,
        cache_ttl_seconds: float = 300.0,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        super().__init__()
        if batch_size < 1 or cache_ttl_seconds < 0:
            raise ValueError("batch_size must be >= 1 and cache_ttl_seconds >= 0")
        self._fn = LookupReferenceFn(url, lookups, batch_size, cache_ttl_seconds, retry)

    def expand(self, events: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return events | "Lookup" >> beam.ParDo(self._fn).with_outputs(DEAD_LETTER_TAG, main="events")
